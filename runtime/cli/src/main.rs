//! The `ferray` binary: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    ferray_cli::main()
}
