//! Transport security flags shared by every subcommand that speaks gRPC.
//!
//! Mutual TLS (rustls) when `--tls-cert`, `--tls-key` and `--tls-ca` are all
//! given: the server presents its certificate and requires a client
//! certificate signed by the CA; clients do the same in reverse. Plaintext
//! only with an explicit `--insecure`; anything in between is an error.

use std::path::PathBuf;

use anyhow::Context;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate of this process (server and client side).
    #[arg(long, env = "ROAM_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "ROAM_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle that signs every peer's certificate.
    #[arg(long, env = "ROAM_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Use plaintext gRPC (tests and development only).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_ca"])]
    pub insecure: bool,
}

struct Pems {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl TlsArgs {
    fn pems(&self) -> anyhow::Result<Option<Pems>> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca, self.insecure) {
            (None, None, None, true) => Ok(None),
            (Some(cert), Some(key), Some(ca), false) => {
                let read = |p: &PathBuf, what: &str| {
                    std::fs::read(p).with_context(|| format!("read {what} {}", p.display()))
                };
                Ok(Some(Pems {
                    cert: read(cert, "--tls-cert")?,
                    key: read(key, "--tls-key")?,
                    ca: read(ca, "--tls-ca")?,
                }))
            }
            (None, None, None, false) => {
                anyhow::bail!(
                    "give --tls-cert, --tls-key and --tls-ca for mutual TLS, or --insecure for plaintext"
                )
            }
            _ => anyhow::bail!("--tls-cert, --tls-key and --tls-ca must be given together"),
        }
    }

    pub fn server_config(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        Ok(self.pems()?.map(|p| {
            ServerTlsConfig::new()
                .identity(Identity::from_pem(p.cert, p.key))
                .client_ca_root(Certificate::from_pem(p.ca))
        }))
    }

    pub fn client_config(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        Ok(self.pems()?.map(|p| {
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(p.ca))
                .identity(Identity::from_pem(p.cert, p.key))
        }))
    }
}
