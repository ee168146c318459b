//! `zfnet-miniatures`: writes the dataset miniatures `make paper-mini` runs the paper's
//! pipeline on (see the library's documentation for the layouts).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use miniatures::{Scale, write_miniatures};

#[derive(Debug, Parser)]
#[command(
    name = "zfnet-miniatures",
    about = "Write miniatures of ILSVRC 2012, Caltech-101/256 and PASCAL VOC 2012 in their \
             real folder layouts, drawn from Fashion-MNIST pictures. Deterministic."
)]
struct Args {
    /// The folder to write (new, empty, or written by this tool before).
    #[arg(long)]
    out: PathBuf,
    /// The folder holding Fashion-MNIST's IDX files (Debian's dataset-fashion-mnist).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    fashion_mnist: PathBuf,
    /// How many images: `paper-mini` (make paper-mini) or `ci` (the test in make test).
    #[arg(long, value_enum, default_value_t = ScaleArg::PaperMini)]
    scale: ScaleArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ScaleArg {
    PaperMini,
    Ci,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scale = match args.scale {
        ScaleArg::PaperMini => Scale::PAPER_MINI,
        ScaleArg::Ci => Scale::CI,
    };
    match write_miniatures(&args.fashion_mnist, &args.out, &scale) {
        Ok(written) if written.unchanged => {
            println!(
                "{} already holds these miniatures; nothing written",
                args.out.display()
            );
            ExitCode::SUCCESS
        }
        Ok(written) => {
            println!(
                "wrote {} files ({:.1} MB) under {}",
                written.files,
                written.bytes as f64 / 1e6,
                args.out.display()
            );
            let mut kinds: std::collections::BTreeMap<&str, Vec<&std::path::Path>> =
                std::collections::BTreeMap::new();
            for (path, what) in &written.odd_files {
                kinds.entry(what).or_default().push(path);
            }
            for (what, paths) in kinds {
                match paths.as_slice() {
                    [one] => println!("  1 x {what}: {}", one.display()),
                    many => println!("  {} x {what}, e.g. {}", many.len(), many[0].display()),
                }
            }
            for (imagenet, caltech) in &written.planted_duplicates {
                println!(
                    "  planted duplicate: {} = {}",
                    caltech.display(),
                    imagenet.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}
