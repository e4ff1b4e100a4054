//! `ferray serve`: an application file's deployments behind an HTTP proxy.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ferray::OutputMode;

use crate::args;

#[derive(clap::Subcommand, Debug)]
pub(crate) enum ServeCommand {
    /// Run an application on the embedded runtime, on this machine, until
    /// interrupted: its deployments behind the proxy on http.host:http.port
    /// (127.0.0.1:8000 unless the file or --host/--port say otherwise).
    Run(Box<RunArgs>),
    /// Deploy an application on a cluster: its proxy on the head's machine
    /// (http.host:http.port), its replicas on the cluster's nodes. Deploying
    /// again is a rolling update: changed deployments start their new
    /// replicas, then the old ones drain; unchanged ones keep theirs.
    Deploy(DeployArgs),
    /// The cluster's application: its proxy and each deployment's replicas
    /// and counters.
    Status(StatusArgs),
    /// Stop the cluster's application: its proxy and its replicas.
    Delete(StatusArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    connect: crate::cluster::ConnectArgs,
    /// Where the application takes requests: head-only (the proxy on the
    /// head's machine) or every-node (a proxy on every node too); over the
    /// file's `proxy_location`.
    #[arg(long, value_name = "WHERE", value_parser = parse_proxy_location)]
    proxy_location: Option<ferray_serve::ProxyLocation>,
    /// The application file (TOML); its components are read beside it.
    app: PathBuf,
}

fn parse_proxy_location(s: &str) -> Result<ferray_serve::ProxyLocation, String> {
    s.parse()
}

#[derive(clap::Args, Debug)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    connect: crate::cluster::ConnectArgs,
    /// Print JSON (`ferray_core::view::ServeStatus`) instead of a table.
    #[arg(long)]
    json: bool,
    /// The application file, if named (a cluster runs one application:
    /// the one it runs is meant).
    #[arg(value_name = "APP.toml")]
    _app: Option<PathBuf>,
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
        ServeCommand::Run(args) => run(*args),
        ServeCommand::Deploy(args) => deploy(args),
        ServeCommand::Status(args) => status(args, false),
        ServeCommand::Delete(args) => status(args, true),
    }
}

fn deploy(args: DeployArgs) -> Result<ExitCode> {
    // Checked here first: a bad file gets its one line before anything is sent.
    let app = ferray_serve::App::load(&args.app)?;
    let text = std::fs::read_to_string(&args.app)
        .with_context(|| format!("cannot read {}", args.app.display()))?;
    let mut components = Vec::new();
    for d in &app.deployments {
        let bytes = std::fs::read(&d.component).with_context(|| {
            format!(
                "deployment {:?}: cannot read {}",
                d.name,
                d.component.display()
            )
        })?;
        components.push((d.name.clone(), bytes::Bytes::from(bytes)));
    }
    let exec = crate::cluster::runtime()?;
    let status = exec.block_on(async {
        let mut client = args.connect.client().await?;
        let origin = args.app.display().to_string();
        let proxy_location = args.proxy_location.map(|p| match p {
            ferray_serve::ProxyLocation::HeadOnly => "head-only".to_string(),
            ferray_serve::ProxyLocation::EveryNode => "every-node".to_string(),
        });
        anyhow::Ok(
            client
                .serve_deploy(text, origin, components, proxy_location)
                .await?,
        )
    })?;
    print_status(&status);
    outln!("ferray serve: deployed; listening on {}", status.proxy);
    Ok(ExitCode::SUCCESS)
}

fn status(args: StatusArgs, delete: bool) -> Result<ExitCode> {
    let exec = crate::cluster::runtime()?;
    let status = exec.block_on(async {
        let mut client = args.connect.client().await?;
        anyhow::Ok(if delete {
            client.serve_delete().await?
        } else {
            client.serve_status().await?
        })
    })?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&status)?);
    } else if status.proxy.is_empty() {
        outln!("no application is running");
    } else {
        print_status(&status);
        if delete {
            outln!("ferray serve: deleted the application at {}", status.proxy);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(s: &ferray_core::view::ServeStatus) {
    outln!("proxy: {}", s.proxy);
    outln!(
        "{:<20} {:<16} {:<8} {:>8} {:>8} {:>10} {:>9} {:>7}",
        "DEPLOYMENT",
        "ROUTE",
        "KIND",
        "REPLICAS",
        "ONGOING",
        "REQUESTS",
        "REJECTED",
        "FAILED"
    );
    for d in &s.deployments {
        outln!(
            "{:<20} {:<16} {:<8} {:>8} {:>8} {:>10} {:>9} {:>7}",
            d.name,
            d.route_prefix,
            d.kind,
            d.replicas,
            d.ongoing_requests,
            d.requests,
            d.rejected,
            d.failed
        );
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
        let url = server.url().to_string();
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

/// The head process's serve controller, as the head calls it.
pub(crate) struct HeadServe(pub(crate) std::sync::Arc<ferray_serve::Controller>);

impl ferray_head::ServeControl for HeadServe {
    fn deploy(&self, app: ferray_core::view::ServeApp) -> ferray_head::ServeFuture {
        let c = self.0.clone();
        // On a task of its own: a client that goes away mid-deploy leaves
        // it whole (started, or its new replicas retired), never half done.
        let deploying = tokio::spawn(async move { c.deploy(app).await });
        Box::pin(async move {
            deploying
                .await
                .map_err(|e| ferray::Error::System(format!("the deploy failed: {e}")))?
        })
    }

    fn restore(&self, app: ferray_core::view::ServeApp) -> ferray_head::ServeFuture {
        let c = self.0.clone();
        Box::pin(async move { c.restore(app).await })
    }

    fn status(&self) -> ferray_head::ServeFuture {
        let c = self.0.clone();
        Box::pin(async move { Ok(c.status().await) })
    }

    fn delete(&self) -> ferray_head::ServeFuture {
        let c = self.0.clone();
        Box::pin(async move { Ok(c.delete().await) })
    }

    fn call(
        &self,
        deployment: String,
        request: ferray::HttpRequest,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = ferray::Result<ferray::HttpResponse>> + Send>,
    > {
        self.0.call(deployment, request)
    }
}

type Answer<T> = std::pin::Pin<Box<dyn std::future::Future<Output = ferray::Result<T>> + Send>>;

/// The head, as a worker node's serve proxy reaches it.
struct HeadUpstream(ferray::cluster::Client);

impl ferray_serve::Upstream for HeadUpstream {
    fn status(&self) -> Answer<ferray_core::view::ServeStatus> {
        let mut c = self.0.clone();
        Box::pin(async move { c.serve_status().await })
    }

    fn call(
        &self,
        deployment: String,
        request: ferray::HttpRequest,
    ) -> Answer<ferray::HttpResponse> {
        let mut c = self.0.clone();
        Box::pin(async move { c.serve_call(deployment, request).await })
    }
}

/// A worker's serve proxy: while the cluster's application asks for one on
/// every node, it listens on this machine and hands requests to the head.
pub(crate) async fn follow_head(address: String, token: ferray::cluster::Token) {
    // As the cluster's ports: this node's TLS, the cluster token.
    let guard = match ferray_serve::Guard::this_node(token.clone()) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("serve: this node cannot run a proxy: {e}");
            return;
        }
    };
    let client = loop {
        match ferray::cluster::Client::connect(&address, token.clone()).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::debug!("serve: cannot reach the head yet: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    ferray_serve::follow(
        std::sync::Arc::new(HeadUpstream(client)),
        guard,
        |url| {
            outln!("ferray serve: this node's proxy listens on {url}");
            let _ = std::io::Write::flush(&mut std::io::stdout());
        },
        std::future::pending(),
    )
    .await;
}
