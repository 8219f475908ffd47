//! `reference`: the in-memory broadcast chat the load generator compares against.

use clap::Parser;
use tokio::net::TcpListener;

/// A minimal in-memory WebSocket chat speaking the project's protocol (same
/// frames, pong for ping): the physical limit the local stack is measured against.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "REFERENCE_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one).
    #[arg(long, env = "REFERENCE_PORT", default_value_t = 8090)]
    port: u16,
    /// Stage shown in the URL (every path is accepted).
    #[arg(long, default_value = "dev")]
    stage: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind((args.host.as_str(), args.port)).await?;
    // The load generator reads this first line to find the endpoint.
    println!("websocket: ws://{}/{}", listener.local_addr()?, args.stage);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = chat_bench::reference::serve(listener) => result?,
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
