//! A new connection for `metadata_case`'s pool: TCP, with TLS for `https`, verified as the
//! shared client verifies (the platform's trust, which honours `SSL_CERT_FILE`), HTTP/1.1 only.
//! Its failures name the endpoint (`pool::Unanswered`), never the URL's path or query.

use std::sync::{Arc, OnceLock};

use azure_core::error::ErrorKind;
use tokio::io::{AsyncRead, AsyncWrite};

use super::pool::Endpoint;

pub(super) trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// A connection to `url`'s host (the caller bounds the time it takes).
pub(super) async fn connect(
    url: &url::Url,
    endpoint: &Endpoint,
) -> azure_core::Result<Box<dyn Connection>> {
    let host = url
        .host()
        .ok_or_else(|| endpoint.failed(true, "a URL without a host"))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let address = match &host {
        url::Host::Domain(domain) => format!("{domain}:{port}"),
        url::Host::Ipv4(ip) => format!("{ip}:{port}"),
        url::Host::Ipv6(ip) => format!("[{ip}]:{port}"),
    };
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| endpoint.failed(true, e))?;
    let _ = tcp.set_nodelay(true);
    match url.scheme() {
        "http" => Ok(Box::new(tcp)),
        "https" => {
            let server_name = match host {
                url::Host::Domain(domain) => {
                    rustls::pki_types::ServerName::try_from(domain.to_owned())
                        .map_err(|e| endpoint.failed(true, e))?
                }
                url::Host::Ipv4(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                url::Host::Ipv6(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
            };
            let tls = tokio_rustls::TlsConnector::from(tls_config()?)
                .connect(server_name, tcp)
                .await
                .map_err(|e| endpoint.failed(true, e))?;
            Ok(Box::new(tls))
        }
        other => Err(azure_core::Error::with_message(
            ErrorKind::Other,
            format!("cannot send a request over {other}"),
        )),
    }
}

/// The TLS set-up, made once: the installed crypto provider (else aws-lc-rs, as the shared
/// client's), the platform verifier, HTTP/1.1 only.
fn tls_config() -> azure_core::Result<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls_platform_verifier::BuilderVerifierExt;
            let provider = rustls::crypto::CryptoProvider::get_default()
                .cloned()
                .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .and_then(|builder| builder.with_platform_verifier())
                .map_err(|e| e.to_string())?
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
        .map_err(|e| {
            azure_core::Error::with_message(ErrorKind::Other, format!("setting up TLS: {e}"))
        })
}
