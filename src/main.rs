//! The `bidbridge` command; everything lives in the library (`bidbridge::cli`).

/// jemalloc instead of glibc's malloc: a call is thousands of small,
/// short-lived allocations (mostly the ESL reader's header strings), on
/// which glibc's allocator spent about a quarter of the daemon's
/// instructions. jemalloc cut the daemon's CPU per call by about a fifth
/// with the same resident memory per held call; mimalloc was as fast but
/// held half as much memory again per call unless tuned
/// (docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    bidbridge::cli::main()
}
