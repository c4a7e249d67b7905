//! The build plan: a parsed Dockerfile split into stages, with the global ARGs (those before
//! the first FROM) evaluated, each stage's base resolved to scratch, an earlier stage or an
//! image reference, and the set of stages the target needs.

use crate::expand::{expand_word, Vars};
use crate::mount::mount_from;
use crate::parser::{Dockerfile, Instruction, InstructionKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

/// Why a Dockerfile cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// An instruction is misplaced or its arguments do not expand.
    #[error("{}:{line}: {instruction}\n  {message}", file.display())]
    Step {
        /// The Dockerfile.
        file: PathBuf,
        /// The instruction's first line.
        line: usize,
        /// The instruction as written.
        instruction: String,
        /// What went wrong.
        message: String,
    },
    /// The Dockerfile has no stage.
    #[error("{}: no FROM instruction", file.display())]
    NoFrom {
        /// The Dockerfile.
        file: PathBuf,
    },
    /// `--target` names no stage.
    #[error("--target {target}: no stage has that name (stages: {stages})")]
    UnknownTarget {
        /// The target as given.
        target: String,
        /// The stage names, joined with `, ` (or `none named`).
        stages: String,
    },
}

/// Result of planning.
pub type Result<T> = std::result::Result<T, PlanError>;

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageBase {
    /// `FROM scratch`: an empty filesystem.
    Scratch,
    /// `FROM <earlier stage>`.
    Stage(usize),
    /// `FROM <image reference>`.
    Image(String),
}

/// One build stage.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Position in the Dockerfile, from 0.
    pub index: usize,
    /// The `AS` name, lower-cased as Docker compares stage names case-insensitively.
    pub name: Option<String>,
    /// The FROM instruction.
    pub from: Instruction,
    /// What the stage starts from, after expanding global ARGs.
    pub base: StageBase,
    /// `--platform` of the FROM, expanded.
    pub platform: Option<String>,
    /// The instructions after FROM.
    pub instructions: Vec<Instruction>,
    /// The stages or images its COPY `--from` and RUN `--mount` `from=` name, as written
    /// (not expanded).
    pub sources: Vec<String>,
}

/// A Dockerfile ready to execute.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The Dockerfile path, for messages.
    pub file: PathBuf,
    /// The escape character.
    pub escape: char,
    /// Global ARGs and their values (None: declared without a value).
    pub global_args: BTreeMap<String, Option<String>>,
    /// Automatic platform ARGs (`TARGETPLATFORM`, `BUILDARCH`, ...): usable in FROM lines
    /// without a declaration, and in a stage after `ARG NAME`.
    pub auto_args: BTreeMap<String, String>,
    /// The stages in order.
    pub stages: Vec<Stage>,
    /// Stage index by `AS` name (lower-cased), so that many stages cost no quadratic time.
    names: HashMap<String, usize>,
}

/// Build args from the command line: `Some(value)`, or `None` for "declared, no value".
pub type BuildArgs = BTreeMap<String, Option<String>>;

struct GlobalVars<'a> {
    args: &'a BTreeMap<String, Option<String>>,
    auto: &'a BTreeMap<String, String>,
}

impl Vars for GlobalVars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        match self.args.get(name) {
            Some(value) => value.clone(),
            None => self.auto.get(name).cloned(),
        }
    }
}

impl Plan {
    /// Splits `dockerfile` into stages, evaluating global ARGs with `build_args` and the
    /// automatic platform ARGs `auto_args`.
    pub fn new(
        dockerfile: &Dockerfile,
        build_args: &BuildArgs,
        auto_args: BTreeMap<String, String>,
    ) -> Result<Plan> {
        let mut plan = Plan {
            file: dockerfile.file.clone(),
            escape: dockerfile.escape,
            global_args: BTreeMap::new(),
            auto_args,
            stages: Vec::new(),
            names: HashMap::new(),
        };
        for ins in &dockerfile.instructions {
            match &ins.kind {
                InstructionKind::From {
                    image,
                    alias,
                    platform,
                } => plan.add_stage(ins, image, alias.as_deref(), platform.as_deref())?,
                InstructionKind::Arg(decls) if plan.stages.is_empty() => {
                    for decl in decls {
                        let value = match build_args.get(&decl.name) {
                            Some(Some(v)) => Some(v.clone()),
                            _ => match &decl.default {
                                Some(d) => Some(plan.expand_global(ins, d)?),
                                None => None,
                            },
                        };
                        plan.global_args.insert(decl.name.clone(), value);
                    }
                }
                _ => plan.add_instruction(ins)?,
            }
        }
        if plan.stages.is_empty() {
            return Err(PlanError::NoFrom { file: plan.file });
        }
        Ok(plan)
    }

    fn add_stage(
        &mut self,
        ins: &Instruction,
        image: &str,
        alias: Option<&str>,
        platform: Option<&str>,
    ) -> Result<()> {
        let image = self.expand_global(ins, image)?;
        if image.is_empty() {
            return Err(self.step_error(ins, "the image name expands to an empty string"));
        }
        let base = if image.eq_ignore_ascii_case("scratch") {
            StageBase::Scratch
        } else if let Some(i) = self.stage_index(&image) {
            StageBase::Stage(i)
        } else {
            StageBase::Image(image)
        };
        let platform = platform.map(|p| self.expand_global(ins, p)).transpose()?;
        let name = alias.map(str::to_ascii_lowercase);
        if let Some(n) = &name {
            if self.stage_index(n).is_some() {
                return Err(self.step_error(ins, &format!("duplicate stage name {n:?}")));
            }
        }
        if let Some(n) = &name {
            self.names.insert(n.clone(), self.stages.len());
        }
        self.stages.push(Stage {
            index: self.stages.len(),
            name,
            from: ins.clone(),
            base,
            platform,
            instructions: Vec::new(),
            sources: Vec::new(),
        });
        Ok(())
    }

    /// Adds `ins` to the current stage, with the stages it names.
    fn add_instruction(&mut self, ins: &Instruction) -> Result<()> {
        if self.stages.is_empty() {
            return Err(self.step_error(ins, "only ARG may come before the first FROM"));
        }
        let sources = self.instruction_sources(ins)?;
        if let Some(stage) = self.stages.last_mut() {
            stage.instructions.push(ins.clone());
            stage.sources.extend(sources);
        }
        Ok(())
    }

    /// The stages or images `ins` reads from: COPY `--from`, RUN `--mount` `from=`.
    fn instruction_sources(&self, ins: &Instruction) -> Result<Vec<String>> {
        match &ins.kind {
            InstructionKind::Copy(args) => Ok(args.from.iter().cloned().collect()),
            InstructionKind::Run(args) => args
                .mounts
                .iter()
                .filter_map(|m| {
                    mount_from(m)
                        .map_err(|e| self.step_error(ins, &format!("--mount={m}: {e}")))
                        .transpose()
                })
                .collect(),
            _ => Ok(Vec::new()),
        }
    }

    fn expand_global(&self, ins: &Instruction, word: &str) -> Result<String> {
        let vars = GlobalVars {
            args: &self.global_args,
            auto: &self.auto_args,
        };
        expand_word(word, &vars, self.escape).map_err(|e| self.step_error(ins, &e.to_string()))
    }

    /// An error about instruction `ins`.
    pub fn step_error(&self, ins: &Instruction, message: &str) -> PlanError {
        PlanError::Step {
            file: self.file.clone(),
            line: ins.line,
            instruction: ins.original.clone(),
            message: message.to_string(),
        }
    }

    /// The index of the stage called `name` (case-insensitive), or with that number.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.names
            .get(&name.to_ascii_lowercase())
            .copied()
            .or_else(|| {
                name.parse::<usize>()
                    .ok()
                    .filter(|i| *i < self.stages.len())
            })
    }

    /// The stage to build: `target` by name, or the last one.
    pub fn target(&self, target: Option<&str>) -> Result<usize> {
        match target {
            None => Ok(self.stages.len() - 1),
            Some(t) => self
                .stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
                .ok_or_else(|| {
                    let names: Vec<&str> = self
                        .stages
                        .iter()
                        .filter_map(|s| s.name.as_deref())
                        .collect();
                    PlanError::UnknownTarget {
                        target: t.to_string(),
                        stages: if names.is_empty() {
                            "none named".to_string()
                        } else {
                            names.join(", ")
                        },
                    }
                }),
        }
    }

    /// The stages `target` needs (through FROM and COPY --from), itself included.
    pub fn needed_stages(&self, target: usize) -> BTreeSet<usize> {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            let stage = &self.stages[i];
            if let StageBase::Stage(parent) = stage.base {
                todo.push(parent);
            }
            for from in &stage.sources {
                if let Some(dep) = self.stage_index(from).filter(|d| *d < i) {
                    todo.push(dep);
                }
            }
        }
        needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;
    use std::path::Path;

    fn plan(text: &str, args: &[(&str, &str)]) -> Result<Plan> {
        let df = parse(text, Path::new("Dockerfile")).unwrap();
        let args = args
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect();
        let auto = BTreeMap::from([("TARGETARCH".to_string(), "amd64".to_string())]);
        Plan::new(&df, &args, auto)
    }

    #[test]
    fn global_args_expand_in_from_and_build_args_override_them() {
        let p = plan(
            "ARG BASE=alpine\nARG TAG=1\nFROM ${BASE}:$TAG\n",
            &[("TAG", "2")],
        )
        .unwrap();
        assert_eq!(p.stages[0].base, StageBase::Image("alpine:2".into()));
    }

    #[test]
    fn platform_args_work_in_from_without_declaration() {
        let p = plan("FROM busybox-$TARGETARCH\n", &[]).unwrap();
        assert_eq!(p.stages[0].base, StageBase::Image("busybox-amd64".into()));
        let p = plan("ARG TARGETARCH=arm\nFROM busybox-$TARGETARCH\n", &[]).unwrap();
        assert_eq!(p.stages[0].base, StageBase::Image("busybox-arm".into()));
    }

    #[test]
    fn stages_resolve_scratch_names_and_dependencies() {
        let text = "FROM scratch AS a\nFROM busybox AS Build\nCOPY --from=a / /\n\
                    FROM build AS final\nFROM busybox AS unused\n\
                    FROM busybox AS m\nRUN --mount=type=bind,from=a,target=/a true\n";
        let p = plan(text, &[]).unwrap();
        assert_eq!(p.stages[0].base, StageBase::Scratch);
        assert_eq!(p.stages[2].base, StageBase::Stage(1));
        let target = p.target(Some("final")).unwrap();
        assert_eq!(p.needed_stages(target), BTreeSet::from([0, 1, 2]));
        assert_eq!(p.target(None).unwrap(), 4);
        assert_eq!(
            p.needed_stages(4),
            BTreeSet::from([0, 4]),
            "RUN --mount from= is a dependency"
        );
        assert!(p
            .target(Some("nope"))
            .unwrap_err()
            .to_string()
            .contains("final"));
    }

    #[test]
    fn mount_sources_are_bind_and_cache_from_and_their_syntax_errors_name_the_line() {
        let text = "FROM scratch AS a\nFROM scratch AS b\nFROM busybox\n\
                    RUN --mount=type=cache,from=a,target=/c --mount=type=secret,id=x,from=b true\n";
        let p = plan(text, &[]).unwrap();
        assert_eq!(p.stages[2].sources, vec!["a".to_string()]);
        assert_eq!(p.needed_stages(2), BTreeSet::from([0, 2]));
        let err = plan("FROM busybox\nRUN --mount=target=/x,=y true\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("Dockerfile:2:"), "{text}");
        assert!(
            text.contains("--mount=target=/x,=y: invalid --mount value"),
            "{text}"
        );
    }

    #[test]
    fn many_stages_plan_in_linear_time() {
        let text: String = (0..50_000)
            .map(|i| {
                format!(
                    "FROM s{} AS s{i}\nCOPY --from=s{} / /\n",
                    i.max(1) - 1,
                    i / 2
                )
            })
            .collect();
        let start = std::time::Instant::now();
        let p = plan(&text, &[]).unwrap();
        assert_eq!(p.stages.len(), 50_000);
        assert_eq!(p.stages[7].base, StageBase::Stage(6));
        assert_eq!(p.stage_index("S49999"), Some(49_999));
        assert_eq!(p.needed_stages(49_999).len(), 50_000);
        assert!(start.elapsed() < std::time::Duration::from_secs(3));
    }

    #[test]
    fn nested_substitutions_in_global_args_are_an_error_naming_the_line() {
        let deep = format!("{}x{}", "${a:-".repeat(20_000), "}".repeat(20_000));
        let err = plan(&format!("ARG A={deep}\nFROM scratch\n"), &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("Dockerfile:1:"), "{}", &text[..100]);
        assert!(text.contains("nested more than"));
    }

    #[test]
    fn instructions_before_from_other_than_arg_are_refused() {
        let err = parse("ENV A=1\nFROM x\n", Path::new("Dockerfile")).unwrap_err();
        assert!(err.to_string().contains("Dockerfile:1"), "{err}");
    }
}
