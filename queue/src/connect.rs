//! Connecting to PostgreSQL without libc's resolver or OpenSSL.
//!
//! The worker ships as a static binary in an image with no NSS modules, so
//! host names are resolved here with a pure-Rust resolver (`/etc/hosts`, then
//! DNS from `/etc/resolv.conf`), and TLS is rustls with bundled web roots plus
//! an optional `sslrootcert` (Cloud SQL's server CA).
//!
//! `sslmode` follows libpq's names: `disable`; `prefer` (the default: TLS when
//! the server offers it); `require` and `verify-ca` (TLS, certificate chain
//! verified, host name not checked, which is what Cloud SQL's private IPs
//! need); `verify-full` (chain and host name). Unlike libpq, `prefer` and
//! `require` still verify the chain: drove never trusts an unverified server.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// Connection time limit when the URL sets none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed database URL, ready to open any number of connections.
#[derive(Clone)]
pub struct DbConfig {
    config: Config,
    tls: Option<MakeRustlsConnect>,
    display: String,
    /// The URL named an `application_name`: keep it.
    app_name_given: bool,
}

/// The driver of one connection; poll it (or spawn it) for the client to work.
pub type DbConnection = Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

impl DbConfig {
    /// Parses a `postgres://` URL or a `key=value` connection string.
    pub fn parse(url: &str) -> Result<DbConfig> {
        let (rest, mode, rootcert) = take_tls_params(url)?;
        let mut config: Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| Error::Config(format!("{e} in {}", redact(url))))?;
        if config.get_hosts().is_empty() {
            return Err(Error::Config(format!("no host in {}", redact(url))));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        let app_name_given = config.get_application_name().is_some();
        if !app_name_given {
            config.application_name("drove");
        }
        let tls = match mode {
            TlsMode::Disable => {
                config.ssl_mode(SslMode::Disable);
                None
            }
            TlsMode::Prefer => {
                config.ssl_mode(SslMode::Prefer);
                Some(tls_connector(rootcert.as_deref(), false)?)
            }
            TlsMode::Require | TlsMode::VerifyFull => {
                config.ssl_mode(SslMode::Require);
                Some(tls_connector(
                    rootcert.as_deref(),
                    mode == TlsMode::VerifyFull,
                )?)
            }
        };
        Ok(DbConfig {
            config,
            tls,
            display: redact(url),
            app_name_given,
        })
    }

    /// The same database, with connections named `name` in
    /// `pg_stat_activity` (e.g. one name per worker process, so its
    /// connections can be counted), unless the URL set `application_name`.
    /// Postgres keeps the first 63 bytes.
    pub fn with_application_name(mut self, name: &str) -> DbConfig {
        if !self.app_name_given {
            self.config.application_name(name);
        }
        self
    }

    /// The URL with its password hidden, for logs and error messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Opens a connection and returns the client and its driver. Host names
    /// are resolved on every call, so a moved server (failover) is followed.
    pub async fn connect_raw(&self) -> Result<(Client, DbConnection)> {
        let mut config = self.config.clone();
        for host in self.config.get_hosts() {
            if let Host::Tcp(name) = host
                && name.parse::<IpAddr>().is_err()
                && self.config.get_hostaddrs().is_empty()
            {
                config.hostaddr(resolve(name).await?);
            }
        }
        let tls = match &self.tls {
            Some(tls) => tls.clone(),
            // SslMode::Disable never starts a handshake; the connector is only a type.
            None => no_tls_connector(),
        };
        let connect = config.connect(tls);
        let timeout = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        match tokio::time::timeout(timeout + Duration::from_secs(1), connect).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(source)) => Err(Error::Connect {
                target: self.display.clone(),
                source,
            }),
            Err(_) => Err(Error::Timeout("connecting to PostgreSQL")),
        }
    }
}

async fn resolve(name: &str) -> Result<IpAddr> {
    let fail = |message: String| Error::Resolve {
        host: name.to_string(),
        message,
    };
    if name == "localhost" {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    let resolver = hickory_resolver::TokioResolver::builder_tokio()
        .map_err(|e| fail(format!("reading /etc/resolv.conf: {e}")))?
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let ips = resolver
        .lookup_ip(name)
        .await
        .map_err(|e| fail(e.to_string()))?;
    // Prefer IPv4: Docker networks and most VPCs are IPv4-first.
    let mut all: Vec<IpAddr> = ips.iter().collect();
    all.sort_by_key(|ip| ip.is_ipv6());
    all.into_iter()
        .next()
        .ok_or_else(|| fail("no addresses".into()))
}

/// Splits off the TLS settings tokio-postgres does not parse itself.
fn take_tls_params(url: &str) -> Result<(String, TlsMode, Option<String>)> {
    let mut mode = TlsMode::Prefer;
    let mut rootcert = None;
    let mut apply = |key: &str, value: &str| -> Result<bool> {
        match key {
            "sslmode" => {
                mode = match value {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" | "verify-ca" => TlsMode::Require,
                    "verify-full" => TlsMode::VerifyFull,
                    other => return Err(Error::Config(format!("unknown sslmode {other:?}"))),
                };
                Ok(true)
            }
            "sslrootcert" => {
                rootcert = Some(value.to_string());
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if let Some((base, query)) = url.split_once('?').filter(|_| url.contains("://")) {
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !apply(k, &percent_decode(v))? {
                kept.push(pair);
            }
        }
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else if !url.contains("://") {
        let mut kept = Vec::new();
        for pair in url.split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !apply(k, v)? {
                kept.push(pair);
            }
        }
        kept.join(" ")
    } else {
        url.to_string()
    };
    Ok((rest, mode, rootcert))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Hides the password of a URL (`postgres://user:***@host/db`).
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((creds, host)) = rest.rsplit_once('@')
            && let Some((user, _)) = creds.split_once(':')
        {
            return format!("{scheme}://{user}:***@{host}");
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|p| {
            if p.starts_with("password=") {
                "password=***"
            } else {
                p
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_connector(rootcert: Option<&str>, check_host: bool) -> Result<MakeRustlsConnect> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = rootcert {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| Error::Config(format!("sslrootcert {path}: {e}")))?;
        for cert in certs {
            let cert = cert.map_err(|e| Error::Config(format!("sslrootcert {path}: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::Config(format!("sslrootcert {path}: {e}")))?;
        }
    }
    let provider = provider();
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Config(format!("TLS roots: {e}")))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let config = if check_host {
        builder.with_webpki_verifier(webpki).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
            .with_no_client_auth()
    };
    Ok(MakeRustlsConnect::new(config))
}

fn no_tls_connector() -> MakeRustlsConnect {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    MakeRustlsConnect::new(config)
}

/// Verifies the certificate chain but not the host name (libpq's `verify-ca`).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            redact("host=db password=s3cret user=app"),
            "host=db password=*** user=app"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
    }

    #[test]
    fn tls_params_are_split_off() {
        let (rest, mode, root) = take_tls_params(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h/db?application_name=x");
        assert_eq!(mode, TlsMode::VerifyFull);
        assert_eq!(root.as_deref(), Some("/tmp/ca.pem"));
        assert!(take_tls_params("postgres://u@h/db?sslmode=bogus").is_err());
        let (rest, mode, _) = take_tls_params("host=h sslmode=disable user=u").unwrap();
        assert_eq!((rest.as_str(), mode), ("host=h user=u", TlsMode::Disable));
    }

    #[test]
    fn application_name_from_the_url_wins() {
        let named = |url: &str| {
            DbConfig::parse(url)
                .unwrap()
                .with_application_name("drove-worker x")
                .config
                .get_application_name()
                .map(str::to_string)
        };
        assert_eq!(
            named("postgres://u@h/db?sslmode=disable").as_deref(),
            Some("drove-worker x")
        );
        assert_eq!(
            named("postgres://u@h/db?sslmode=disable&application_name=mine").as_deref(),
            Some("mine")
        );
    }

    #[test]
    fn bad_urls_name_the_problem() {
        let err =
            DbConfig::parse("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent.pem")
                .unwrap_err();
        assert!(err.to_string().contains("/nonexistent.pem"), "{err}");
        let err = DbConfig::parse("postgres://u:pw@h:notaport/db").unwrap_err();
        assert!(
            err.to_string().contains("invalid database URL") && !err.to_string().contains("pw@"),
            "{err}"
        );
    }
}
