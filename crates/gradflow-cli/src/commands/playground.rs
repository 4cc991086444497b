//! `gradflow playground`: a local web page that trains small networks live
//! with the real engine (see the `gradflow-playground` crate).

use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  gradflow playground                       # http://127.0.0.1:8080/
  gradflow playground --port 0              # any free port; the URL printed says which
  gradflow playground --host 0.0.0.0        # reachable from other machines (no authentication!)")]
pub struct PlaygroundArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to bind; the default serves this machine only.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
}

pub fn run(a: PlaygroundArgs) -> Result<()> {
    let opts = gradflow_playground::ServerOptions {
        host: a.host.clone(),
        port: a.port,
        ..Default::default()
    };
    let loopback = matches!(a.host.as_str(), "localhost" | "127.0.0.1" | "::1");
    gradflow_playground::serve_blocking(&opts, |url| {
        println!("gradflow playground: {url}");
        if !loopback {
            eprintln!(
                "warning: listening on {}: anyone who can reach this machine can use the playground",
                a.host
            );
        }
        println!("Open the address in a browser; press Ctrl-C to stop.");
        let _ = std::io::stdout().flush();
    })
    .with_context(|| format!("cannot serve on {}:{}", a.host, a.port))
}
