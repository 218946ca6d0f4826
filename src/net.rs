//! Connections both protocols make the same way: TCP and TLS to an upstream with a
//! timeout, and the server side of a TLS handshake with a timeout. Upstream TLS is
//! always verified (the `ClientConfig` carries the system roots and `extra_ca`); one
//! `ClientConfig` is shared per process, so TLS 1.3 session tickets are reused.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Why a connection could not be made. Each names the `host:port` it was for.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot connect to {target}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{target}: {step} did not finish within {after:?}")]
    Timeout {
        target: String,
        step: &'static str,
        after: Duration,
    },
    #[error("TLS with {target} failed")]
    Tls {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host:?} is not a valid TLS server name")]
    Name { host: String },
}

/// Where an upstream is: host and port, and how long each step may take.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub timeout: Duration,
}

impl Endpoint {
    pub fn label(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A TCP connection (no Nagle delay: both protocols are request/response).
    pub async fn tcp(&self) -> Result<TcpStream, NetError> {
        let tcp = tokio::time::timeout(
            self.timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| NetError::Timeout {
            target: self.label(),
            step: "connect",
            after: self.timeout,
        })?
        .map_err(|source| NetError::Connect {
            target: self.label(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// The client side of a verified TLS handshake over `io` (implicit TLS, or after
    /// STARTTLS).
    pub async fn tls<S>(
        &self,
        config: &Arc<rustls::ClientConfig>,
        io: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, NetError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = crate::tls::server_name(&self.host).map_err(|_| NetError::Name {
            host: self.host.clone(),
        })?;
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        tokio::time::timeout(self.timeout, connector.connect(name, io))
            .await
            .map_err(|_| NetError::Timeout {
                target: self.label(),
                step: "TLS handshake",
                after: self.timeout,
            })?
            .map_err(|source| NetError::Tls {
                target: self.label(),
                source,
            })
    }
}

/// The server side of a TLS handshake with a client, or `None` when the client did
/// not complete it within `timeout`.
pub async fn accept_tls<S>(
    acceptor: &tokio_rustls::TlsAcceptor,
    io: S,
    timeout: Duration,
) -> std::io::Result<Option<tokio_rustls::server::TlsStream<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, acceptor.accept(io)).await {
        Ok(Ok(tls)) => Ok(Some(tls)),
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(None),
    }
}
