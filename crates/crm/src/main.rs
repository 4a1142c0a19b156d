use clap::Parser;

/// mimalloc instead of glibc's allocator: a request allocates and frees a few hundred small objects on the async
/// workers, and glibc's malloc, free and consolidation took about a fifth of a GET's CPU (BENCHMARKS.md §4).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = crm::cli::Cli::parse();
    crm::cli::run(cli)
}
