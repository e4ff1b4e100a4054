//! `ferray serve`: an application file's deployments behind an HTTP proxy.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use ferray::OutputMode;

use crate::args;

#[derive(clap::Subcommand, Debug)]
pub(crate) enum ServeCommand {
    /// Run an application on the embedded runtime, on this machine, until
    /// interrupted: its deployments behind the proxy on http.host:http.port
    /// (127.0.0.1:8000 unless the file or --host/--port say otherwise).
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    node: args::NodeArgs,
    /// The proxy's address (overrides the file's http.host).
    #[arg(long)]
    host: Option<String>,
    /// The proxy's port (overrides the file's http.port; 0: any free port).
    #[arg(long)]
    port: Option<u16>,
    /// The application file (TOML).
    app: PathBuf,
}

pub(crate) fn serve(cmd: ServeCommand) -> Result<ExitCode> {
    match cmd {
        ServeCommand::Run(args) => run(args),
    }
}

fn run(args: RunArgs) -> Result<ExitCode> {
    let mut app = ferray_serve::App::load(&args.app)?;
    if let Some(h) = args.host {
        app.http.host = h;
    }
    if let Some(p) = args.port {
        app.http.port = p;
    }
    let rt = args.node.builder(OutputMode::Stderr).build_sync()?;
    rt.block_on(async {
        let server = ferray_serve::start(&rt, app).await?;
        let url = ferray_serve::url(server.local_addr());
        for d in server.status() {
            outln!(
                "deployment {} at {url}{} ({} replicas)",
                d.name,
                d.route_prefix,
                d.replicas
            );
        }
        // The last line a script waits for.
        outln!("ferray serve: listening on {url}");
        wait_for_signal().await;
        server.shutdown();
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Until Ctrl-C or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
