//! WORKDIR: sets the working directory and creates it (owned by the current USER).

use super::{KeyFields, Layering, Step};
use crate::engine::StageOptions;
use crate::error::Result;
use crate::stage::StageRun;
use ocibuild_dockerfile::ir::WorkdirOp;
use ocibuild_dockerfile::parser::Instruction;

impl Step for WorkdirOp {
    fn kind(&self) -> &'static str {
        "WORKDIR"
    }

    /// Its layer is always looked up in the layer cache (when there is one).
    fn layering(&self, _: &StageOptions) -> Layering {
        Layering::Layer { cached: true }
    }

    fn prepare(&self, stage: &mut StageRun<'_, '_>, _: &Instruction) -> Result<()> {
        stage.image.config.config.working_dir = Some(self.path.clone());
        Ok(())
    }

    async fn key_fields(&self, _: &mut StageRun<'_, '_>, _: &Instruction) -> Result<KeyFields> {
        Ok(WorkdirOp::key_fields(self))
    }

    async fn execute(self, stage: &mut StageRun<'_, '_>, ins: &Instruction) -> Result<()> {
        stage.make_dir(ins, &self.path).await
    }
}
