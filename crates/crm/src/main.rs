use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = crm::cli::Cli::parse();
    crm::cli::run(cli)
}
