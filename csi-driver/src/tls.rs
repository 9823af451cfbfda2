//! Transport security flags of every `roam-csi` subcommand that speaks to
//! storage systems: the certificate flags of [`roam_proto::tls`], or an
//! explicit `--insecure`. Anything in between is an error, so plaintext is
//! never an accident.

use anyhow::Context;
use roam_proto::tls::TlsFiles;
use tonic::transport::{ClientTlsConfig, ServerTlsConfig};

pub use roam_proto::tls::Dialer;

#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    #[command(flatten)]
    pub files: TlsFiles,
    /// Use plaintext gRPC (tests and development only).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_ca"])]
    pub insecure: bool,
}

impl TlsArgs {
    fn check(&self) -> anyhow::Result<()> {
        if !self.insecure && !self.files.given() {
            anyhow::bail!(
                "give --tls-cert, --tls-key and --tls-ca for mutual TLS, or --insecure for plaintext"
            );
        }
        Ok(())
    }

    pub fn server_config(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        self.check()?;
        self.files.server_config().context("TLS flags")
    }

    pub fn client_config(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        self.check()?;
        self.files.client_config().context("TLS flags")
    }

    pub fn dialer(&self) -> anyhow::Result<Dialer> {
        self.check()?;
        Dialer::new(&self.files).context("TLS flags")
    }

    /// The flags again, for a storage system started in this process.
    pub fn to_args(&self) -> Vec<String> {
        if self.insecure {
            return vec!["--insecure".to_owned()];
        }
        self.files.to_args()
    }
}
