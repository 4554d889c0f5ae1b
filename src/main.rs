//! `gl`: parse the command line, resolve settings, run one command, print errors with their
//! chain.

use clap::Parser;
use grouploss::cli::{BenchCommand, Cli, Command};
use grouploss::commands::{
    bench_eval, bench_loss, bench_optimizer, bench_train, env, evaluate, fetch, models, prepare,
    synth, train, verify_loss, weights,
};
use grouploss::project::Project;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`gl sql … | head`), as command-line tools do.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    grouploss::runtime::tune_allocator();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // Before anything touches libtorch: a kernel pin re-executes gl with its environment. The
    // numerics check always runs under the portable pin with one thread, as its fixture was.
    let (kernels, threads) = match (&cli.command, cli.kernels.is_pinned()) {
        (Command::NumericsCheck(_), _) => (grouploss::numerics::Kernels::Portable, Some(1)),
        (_, true) => (cli.kernels, Some(cli.threads.unwrap_or(1))),
        (_, false) => (cli.kernels, cli.threads),
    };
    if let Err(e) = grouploss::numerics::kernels::apply(kernels, threads.unwrap_or(1)) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    if let Some(n) = threads {
        tch::set_num_threads(n);
    }
    let (project_dir, data_dir) = (cli.project_dir, cli.data_dir);
    let project = move || Project::resolve(project_dir, data_dir);
    let result = match cli.command {
        Command::Env(args) => env::run(args),
        Command::CliReference => {
            print!("{}", grouploss::cli_doc::markdown());
            Ok(ExitCode::SUCCESS)
        }
        Command::NumericsCheck(args) => grouploss::commands::numerics_check::run(args),
        Command::VerifyLoss(args) => {
            verify_loss::Settings::resolve(args).and_then(verify_loss::run)
        }
        Command::Bench(BenchCommand::Loader(args)) => grouploss::commands::bench_loader::run(args),
        Command::Bench(BenchCommand::Loss(args)) => {
            bench_loss::Settings::resolve(args).and_then(bench_loss::run)
        }
        Command::Bench(BenchCommand::Train(args)) => {
            bench_train::Settings::resolve(args).and_then(bench_train::run)
        }
        Command::Bench(BenchCommand::Epoch(args)) => project()
            .and_then(|p| grouploss::commands::bench_epoch::Settings::resolve(args, p))
            .and_then(grouploss::commands::bench_epoch::run),
        Command::Fetch(args) => project()
            .and_then(|p| fetch::resolve(args, p))
            .and_then(fetch::run),
        Command::Prepare(args) => project()
            .and_then(|p| prepare::resolve(args, p))
            .and_then(prepare::run),
        #[cfg(feature = "catalog")]
        Command::Sql(args) => project().and_then(|p| grouploss::commands::sql::run(args, p)),
        #[cfg(not(feature = "catalog"))]
        Command::Sql(_) => Err(no_catalog()),
        #[cfg(feature = "catalog")]
        Command::Export(grouploss::cli::ExportCommand::Catalog(args)) => {
            project().and_then(|p| grouploss::commands::export::catalog(args, p))
        }
        #[cfg(not(feature = "catalog"))]
        Command::Export(_) => Err(no_catalog()),
        Command::Synth(args) => project().and_then(|p| synth::run(args, p)),
        Command::Models(args) => models::run(args),
        #[cfg(feature = "catalog")]
        Command::IndexRuns(args) => {
            project().and_then(|p| grouploss::commands::index_runs::run(args, p))
        }
        #[cfg(not(feature = "catalog"))]
        Command::IndexRuns(_) => Err(no_catalog()),
        Command::Train(args) => project()
            .and_then(|p| train::resolve(args, p))
            .and_then(train::run),
        Command::Embed(args) => project().and_then(|p| evaluate::embed(args, p)),
        Command::Evaluate(args) => project().and_then(|p| evaluate::evaluate(args, p)),
        Command::Ensemble(args) => project().and_then(|p| evaluate::ensemble(args, p)),
        Command::Bench(BenchCommand::Eval(args)) => {
            bench_eval::Settings::resolve(args).and_then(bench_eval::run)
        }
        Command::Bench(BenchCommand::Optimizer(args)) => {
            bench_optimizer::Settings::resolve(args).and_then(bench_optimizer::run)
        }
        #[cfg(feature = "catalog")]
        Command::Run(args) => {
            project().and_then(|p| grouploss::commands::pipeline::run(args, p, cli.threads))
        }
        #[cfg(feature = "catalog")]
        Command::Status(args) => {
            project().and_then(|p| grouploss::commands::pipeline::status(args, p, cli.threads))
        }
        #[cfg(feature = "catalog")]
        Command::Report(args) => {
            project().and_then(|p| grouploss::commands::report::run(args, p, cli.threads))
        }
        #[cfg(feature = "catalog")]
        Command::Cancel(args) => {
            project().and_then(|p| grouploss::commands::pipeline::cancel(args, p))
        }
        #[cfg(not(feature = "catalog"))]
        Command::Run(_) | Command::Status(_) | Command::Report(_) | Command::Cancel(_) => {
            Err(no_catalog())
        }
        Command::Weights(args) => project()
            .and_then(|p| weights::resolve(args, p))
            .and_then(weights::run),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(not(feature = "catalog"))]
fn no_catalog() -> anyhow::Error {
    anyhow::anyhow!("this gl was built without the catalogue (feature `catalog`)")
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
