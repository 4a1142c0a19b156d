//! Webhook delivery of monitoring alerts: one signed HTTP POST per attempt (the retries and their record in
//! `alert_deliveries` are the detector's, in `monitor_detect.rs`).
//!
//! `https://` receivers are reached over rustls with the *ring* crypto provider (aws-lc compiles slowly and is not
//! needed). Trusted: the Mozilla root certificates compiled in (`webpki-roots`, so nothing is read or downloaded at
//! run time), plus the CA certificates of an optional PEM file given at start (`crm serve --webhook-ca-file`) for
//! receivers behind a private company CA. `http://` is still delivered, for receivers inside the network.
//! Redirects are not followed (a 3xx is a failed attempt); no proxy is used; each attempt has 5 seconds. The client is
//! hyper with hyper-rustls rather than reqwest: reqwest's rustls features either build aws-lc or leave its clients
//! without a crypto provider (feature unification would then break every other reqwest client of the workspace).

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Time one delivery attempt may take, connecting and TLS included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// HMAC-SHA256 of `msg` under `key`, in hex: the webhook signature (`X-CRM-Signature: sha256=<hex>` over
/// `"<timestamp>.<body>"`).
pub fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key"));
    mac.update(msg);
    hex::encode(mac.finalize().into_bytes())
}

/// Why the webhook trust could not be set up (at start: the server refuses to start).
#[derive(Debug, thiserror::Error)]
pub enum WebhookTrustError {
    #[error("cannot read the webhook CA file {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("the webhook CA file {path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NotPem { path: PathBuf },
    #[error("the webhook CA file {path} is not valid PEM: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("the webhook CA file {path} holds a certificate that cannot be a trust anchor: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

/// The certificate authorities webhook receivers are checked against.
#[derive(Debug, Clone, Default)]
pub struct WebhookTrust {
    /// Extra CA certificates (DER) beside the compiled-in Mozilla roots, and the file they came from.
    extra: Vec<CertificateDer<'static>>,
    source: Option<PathBuf>,
}

impl WebhookTrust {
    /// The Mozilla roots only.
    pub fn mozilla_roots() -> WebhookTrust {
        WebhookTrust::default()
    }

    /// The Mozilla roots plus every certificate of the PEM file at `path` (read once, now).
    pub fn with_ca_file(path: &Path) -> Result<WebhookTrust, WebhookTrustError> {
        let bytes =
            std::fs::read(path).map_err(|source| WebhookTrustError::Unreadable { path: path.to_path_buf(), source })?;
        let mut extra = Vec::new();
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            extra
                .push(cert.map_err(|e| WebhookTrustError::BadPem { path: path.to_path_buf(), reason: e.to_string() })?);
        }
        if extra.is_empty() {
            return Err(WebhookTrustError::NotPem { path: path.to_path_buf() });
        }
        let trust = WebhookTrust { extra, source: Some(path.to_path_buf()) };
        // Refuse a file whose certificates rustls cannot use now, not at the first alert.
        trust.root_store()?;
        Ok(trust)
    }

    /// How many extra CA certificates are trusted.
    pub fn extra_certificates(&self) -> usize {
        self.extra.len()
    }

    fn root_store(&self) -> Result<rustls::RootCertStore, WebhookTrustError> {
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        for cert in &self.extra {
            roots.add(cert.clone()).map_err(|e| WebhookTrustError::BadCertificate {
                path: self.source.clone().unwrap_or_default(),
                reason: e.to_string(),
            })?;
        }
        Ok(roots)
    }
}

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// Posts webhook deliveries; one per process (a connection pool shared by every organization's deliveries).
#[derive(Debug, Clone)]
pub struct WebhookSender {
    client: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
}

/// How one attempt ended without a 2xx answer (the reason recorded in `alert_deliveries.last_error`).
pub type AttemptError = String;

impl WebhookSender {
    pub fn new(trust: &WebhookTrust) -> Result<WebhookSender, WebhookTrustError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| WebhookTrustError::Client(e.to_string()))?
            .with_root_certificates(trust.root_store()?)
            .with_no_client_auth();
        let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
        tcp.enforce_http(false); // the TLS layer above takes https:// URLs
        tcp.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(WebhookSender { client })
    }

    /// One POST of `body` (JSON) with `headers`; the receiver's status, or why there was none. Redirects are not
    /// followed (the client has no redirect logic); no proxy is used.
    pub async fn post(&self, url: &str, headers: &[(&str, String)], body: String) -> Result<u16, AttemptError> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) {
            return Err("only http:// and https:// webhooks are delivered".into());
        }
        let mut req = hyper::Request::post(uri)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, concat!("crm-webhook/", env!("CARGO_PKG_VERSION")));
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| format!("cannot build the request: {e}"))?;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(req)).await {
            Err(_) => Err(format!("timed out after {} s", ATTEMPT_TIMEOUT.as_secs())),
            Ok(Err(e)) => Err(describe(&e)),
            // The body is not read: the status is the answer (the connection is closed rather than reused).
            Ok(Ok(res)) => Ok(res.status().as_u16()),
        }
    }
}

impl crate::Store {
    /// Sets whom this process's webhook deliveries trust (the server does at start, from `--webhook-ca-file`).
    pub fn set_webhook_trust(&self, trust: &WebhookTrust) -> Result<(), WebhookTrustError> {
        let sender = WebhookSender::new(trust)?;
        *self.monitor.webhooks.write().unwrap_or_else(|e| e.into_inner()) = Some(sender);
        Ok(())
    }

    /// This process's webhook client; the Mozilla roots only unless [`Store::set_webhook_trust`] said otherwise.
    pub(crate) fn webhook_sender(&self) -> Result<WebhookSender, WebhookTrustError> {
        if let Some(s) = self.monitor.webhooks.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Ok(s.clone());
        }
        let mut slot = self.monitor.webhooks.write().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(WebhookSender::new(&WebhookTrust::mozilla_roots())?);
        }
        slot.clone().ok_or_else(|| WebhookTrustError::Client("no webhook client".into()))
    }
}

/// A reason an operator can act on: certificate problems are named as such, then the error chain.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    if let Some(tls) = tls_error(e) {
        return match tls {
            rustls::Error::InvalidCertificate(c) => format!("TLS certificate rejected: {c:?}"),
            other => format!("TLS failed: {other}"),
        };
    }
    let mut text = if e.is_connect() { "connection failed".to_string() } else { "request failed".to_string() };
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The rustls error behind a failed request, if any. An `io::Error` wrapping another error reports the wrapped
/// error's *source* as its own, skipping the wrapped error itself (and hyper-rustls wraps tokio-rustls's `io::Error`,
/// which wraps the `rustls::Error`, in another one), so wrappers are opened explicitly.
fn tls_error(e: &hyper_util::client::legacy::Error) -> Option<&rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        let mut inner: &(dyn std::error::Error + 'static) = s;
        loop {
            if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                return Some(t);
            }
            match inner.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
                Some(wrapped) => inner = wrapped,
                None => break,
            }
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block size is hashed first.
        assert_eq!(
            hmac_sha256_hex(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_ca_file_must_exist_and_hold_pem_certificates() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let missing = dir.path().join("missing.pem");
        let err = WebhookTrust::with_ca_file(&missing).expect_err("a missing file is refused");
        assert!(matches!(err, WebhookTrustError::Unreadable { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let not_pem = dir.path().join("ca.der");
        std::fs::write(&not_pem, [0x30, 0x82, 0x01, 0x0a, 0x02]).expect("write");
        let err = WebhookTrust::with_ca_file(&not_pem).expect_err("DER is not PEM");
        assert!(matches!(err, WebhookTrustError::NotPem { .. }), "{err}");

        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".to_string()]).expect("certificate");
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, ca.cert.pem()).expect("write");
        let trust = WebhookTrust::with_ca_file(&pem).expect("a PEM certificate is accepted");
        assert_eq!(trust.extra_certificates(), 1);
        WebhookSender::new(&trust).expect("a client with the extra CA");
    }

    #[tokio::test]
    async fn other_schemes_are_not_delivered() {
        let sender = WebhookSender::new(&WebhookTrust::mozilla_roots()).expect("client");
        let err = sender.post("ftp://127.0.0.1/hook", &[], "{}".into()).await.expect_err("ftp is refused");
        assert!(err.contains("http:// and https://"), "{err}");
    }
}
