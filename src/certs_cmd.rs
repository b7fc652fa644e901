//! `fieldlink certs --out DIR`: a test CA, a server certificate for
//! localhost/127.0.0.1 and a client certificate, PEM.

use std::path::PathBuf;

use fieldlink_broker::certs::TestPki;

/// Flags of `fieldlink certs`.
#[derive(Debug, clap::Args)]
pub(crate) struct CertsArgs {
    /// Directory to write ca.pem, ca.key, server.pem, server.key, client.pem
    /// and client.key into (created when missing; existing files are replaced).
    #[arg(long)]
    out: PathBuf,
}

pub(crate) async fn run(args: CertsArgs) -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    for path in pki.write(&args.out)? {
        crate::say(format_args!("wrote {}", path.display()));
    }
    Ok(())
}
