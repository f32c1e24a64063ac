//! The `skipflow` binary: a thin layer over the library.

use clap::Parser;
use skipflow::cli::{self, Cli, Command};
use skipflow::{batch, exit_code, inspect};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skipflow: error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Batch(a) => {
            let cfg = cli::batch_config(&a)?;
            match batch::run_process(&cfg)? {
                Some(out) => {
                    print!("{}", skipflow::report::summary(&out.report));
                    println!("run report: {}", out.report_path.display());
                    batch::gate_verdict(&out)?;
                }
                None => eprintln!(
                    "skipflow batch: process {} of {} done; process 0 published and wrote the run report",
                    cfg.topology.process(),
                    cfg.topology.processes()
                ),
            }
            Ok(())
        }
        Command::Generate(a) => cli::generate(&a),
        Command::Inspect(a) => {
            let o = inspect::Options {
                table: a.table.as_deref(),
                day: a.day.as_deref(),
                limit: a.limit,
                json: a.json,
            };
            print!("{}", inspect::inspect(&a.dir, &o)?);
            Ok(())
        }
        Command::Demo => {
            print!(
                "{}",
                skipflow::demo::run(&skipflow::demo::default_output(), cli::default_workers(None)?)?
            );
            Ok(())
        }
        Command::Broker(a) => cli::broker(&a),
        Command::Report(a) => {
            print!("{}", cli::report(&a)?);
            Ok(())
        }
        Command::Accept(a) => {
            print!("{}", cli::accept(&a)?);
            Ok(())
        }
        Command::Run(a) => {
            let cfg = cli::run_config(&a)?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s = stop.clone();
            ctrlc::set_handler(move || s.store(true, std::sync::atomic::Ordering::SeqCst))
                .map_err(|e| anyhow::anyhow!("installing the signal handler: {e}"))?;
            let commits = skipflow::continuous::run(&cfg, stop)?;
            eprintln!("skipflow run: stopped after {commits} commits");
            Ok(())
        }
    }
}
