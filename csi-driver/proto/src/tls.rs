//! Mutual TLS for the storage system API and replication: the certificate
//! flags every Roam process that speaks to storage systems takes, and the
//! rustls configurations built from them.
//!
//! With `--tls-cert`, `--tls-key` and `--tls-ca` all given, a server presents
//! its certificate and requires a client certificate signed by the CA, and a
//! client does the same in reverse. A client checks the server's certificate
//! against the endpoint's host unless `--tls-server-name` names what every
//! storage system's certificate carries: storage systems are reached by node
//! IPs that no certificate issued ahead of time can list, so the chart issues
//! one name for all.

use std::path::PathBuf;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// Why the certificate flags can't be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert, --tls-key and --tls-ca must be given together")]
    Incomplete,
    #[error("reading {flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storage endpoint {endpoint:?}: {cause}")]
    Endpoint { endpoint: String, cause: String },
}

/// The certificate flags; all of cert, key and CA, or none.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsFiles {
    /// PEM certificate of this process (server and client side).
    #[arg(long, env = "ROAM_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "ROAM_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle that signs every peer's certificate.
    #[arg(long, env = "ROAM_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Name to expect in storage systems' certificates instead of the
    /// endpoint's host.
    #[arg(long, env = "ROAM_TLS_SERVER_NAME", requires = "tls_cert")]
    pub tls_server_name: Option<String>,
}

struct Pems {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl TlsFiles {
    /// Whether any certificate flag was given.
    pub fn given(&self) -> bool {
        self.tls_cert.is_some() || self.tls_key.is_some() || self.tls_ca.is_some()
    }

    fn pems(&self) -> Result<Option<Pems>, TlsError> {
        let (Some(cert), Some(key), Some(ca)) = (&self.tls_cert, &self.tls_key, &self.tls_ca)
        else {
            return if self.given() {
                Err(TlsError::Incomplete)
            } else {
                Ok(None)
            };
        };
        let read = |flag: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                flag,
                path: path.clone(),
                source,
            })
        };
        Ok(Some(Pems {
            cert: read("--tls-cert", cert)?,
            key: read("--tls-key", key)?,
            ca: read("--tls-ca", ca)?,
        }))
    }

    /// The server side: present the certificate, require a client's.
    pub fn server_config(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        Ok(self.pems()?.map(|p| {
            ServerTlsConfig::new()
                .identity(Identity::from_pem(p.cert, p.key))
                .client_ca_root(Certificate::from_pem(p.ca))
        }))
    }

    /// The client side: present the certificate, check the server's.
    pub fn client_config(&self) -> Result<Option<ClientTlsConfig>, TlsError> {
        Ok(self.pems()?.map(|p| {
            let config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(p.ca))
                .identity(Identity::from_pem(p.cert, p.key));
            match &self.tls_server_name {
                Some(name) => config.domain_name(name.clone()),
                None => config,
            }
        }))
    }

    /// The flags again, for a process started with the same identity.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut push = |flag: &str, value: Option<String>| {
            if let Some(value) = value {
                args.push(flag.to_owned());
                args.push(value);
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
        push("--tls-cert", path(&self.tls_cert));
        push("--tls-key", path(&self.tls_key));
        push("--tls-ca", path(&self.tls_ca));
        push("--tls-server-name", self.tls_server_name.clone());
        args
    }
}

/// How a process dials storage systems: plaintext, or mutual TLS with its
/// own certificate.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    tls: Option<ClientTlsConfig>,
}

impl Dialer {
    pub fn new(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            tls: files.client_config()?,
        })
    }

    /// An endpoint for `url` (`http://` or `https://host:port`), with TLS
    /// when this dialer has it, and no Nagle delay on small requests.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, TlsError> {
        let error = |e: tonic::transport::Error| TlsError::Endpoint {
            endpoint: url.to_owned(),
            cause: e.to_string(),
        };
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(error)?
            .tcp_nodelay(true);
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone()).map_err(error),
            None => Ok(endpoint),
        }
    }
}
