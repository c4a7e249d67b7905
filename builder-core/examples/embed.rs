//! Embedding ocibuild: builds `FROM scratch` + `COPY` from a temporary context with an
//! inline Dockerfile, writes the image as an OCI image layout and prints its digest.
//! Needs no registry: `cargo run -p ocibuild-core --example embed`; `cargo test` runs it too.

use ocibuild_core::{Build, BuildEvent, Context, Dockerfile};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let context = tempfile::tempdir()?;
    std::fs::write(context.path().join("hello.txt"), "hello from ocibuild\n")?;
    let dockerfile =
        Dockerfile::inline("FROM scratch\nARG V\nLABEL version=$V\nCOPY hello.txt /\n");

    let image = Build::new(dockerfile, Context::dir(context.path()))
        .build_arg("V", "1")
        // Extracted layers are kept for later builds (by default in /var/lib/ocibuild as
        // root, else ~/.local/share/ocibuild); a temporary store here.
        .layer_store(context.path().join("layer-store"))
        .events(|event| {
            if let BuildEvent::Step {
                number,
                total,
                instruction,
                ..
            } = event
            {
                eprintln!("[{number}/{total}] {instruction}");
            }
        })
        .run()
        .await?;

    let layout = context.path().join("layout");
    image.write_oci_layout(&layout, Some("latest")).await?;
    eprintln!(
        "{} layer(s), OCI layout in {}",
        image.layers().len(),
        layout.display()
    );
    println!("{}", image.digest());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_builds_an_image_and_writes_its_layout() {
        super::main().unwrap();
    }
}
