//! The `bidbridge` command; everything lives in the library (`bidbridge::cli`).

fn main() -> std::process::ExitCode {
    bidbridge::cli::main()
}
