//! Mail client autoconfiguration: Thunderbird's autoconfig and Outlook's Autodiscover,
//! answered with sealpost's own listeners so a client set up with only an address and
//! a password talks to sealpost, not straight to the provider.
//!
//! - Thunderbird: `GET /mail/config-v1.1.xml?emailaddress=…` and
//!   `GET /.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=…` (the clientConfig
//!   1.1 format of Mozilla's autoconfig wiki).
//! - Outlook: `POST /autodiscover/autodiscover.xml` with a request naming
//!   `<EMailAddress>`, answered in the "POX" response schema (`…/outlook/responseschema/2006a`:
//!   Autodiscover/Response/Account/Protocol with Type IMAP and SMTP).
//!
//! Every syntactically valid address at the domain of a configured `[[identity]]` is
//! answered, and with `[keys] secret_dir` every valid address: with the same document,
//! the requested address as user name and the listeners of the domain's account, whether
//! or not that address is configured, so the listener is no oracle for which addresses
//! exist. A configured identity's `login` (its upstream user name) is told only to
//! clients on loopback (a local reverse proxy makes every client look local: then it is
//! told to all). Other domains get 404. Every value written into XML is escaped, whether
//! it came from the config or the request.

use crate::config::Config;
use crate::keys::normalize_address;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Largest Autodiscover request body read (Outlook's are a few hundred bytes).
const MAX_BODY: usize = 16 * 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// A request body must arrive within this long once the header is read.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// One of sealpost's listeners, as a client must be told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Implicit TLS (`listen_tls`) rather than STARTTLS (`listen`).
    pub implicit_tls: bool,
}

/// What one identity's client should be configured with.
#[derive(Debug, Clone)]
pub struct Entry {
    pub address: String,
    /// The user name to enter: the identity's login, or its address.
    pub user: String,
    pub imap: Vec<Endpoint>,
    pub smtp: Vec<Endpoint>,
}

/// Listeners of one account, as clients are told about them.
#[derive(Debug, Clone, Default)]
struct Listeners {
    imap: Vec<Endpoint>,
    smtp: Vec<Endpoint>,
}

/// What the listener answers for.
#[derive(Debug, Default)]
pub struct Directory {
    /// Configured identities by normalised address: their login and their account's
    /// listeners (told to loopback clients only).
    entries: HashMap<String, Entry>,
    /// Normalised domain of each identity: the listeners of the account of the first
    /// identity at that domain.
    domains: HashMap<String, Listeners>,
    /// With `[keys] secret_dir`: any address, with the (one) account's listeners.
    any: Option<Listeners>,
}

impl Directory {
    pub fn from_config(config: &Config) -> Directory {
        let host_for =
            |addr: SocketAddr| match config.autoconfig.as_ref().and_then(|a| a.hostname.clone()) {
                Some(h) => h,
                None => addr.ip().to_string(),
            };
        let endpoints = |s: Option<&crate::config::ServiceConfig>| -> Vec<Endpoint> {
            let Some(s) = s else { return Vec::new() };
            // Implicit TLS first: the stronger choice when both exist.
            [(s.listen_tls, true), (s.listen, false)]
                .into_iter()
                .filter_map(|(a, implicit_tls)| {
                    a.map(|a| Endpoint {
                        host: host_for(a),
                        port: a.port(),
                        implicit_tls,
                    })
                })
                .collect()
        };
        let listeners = |account: &crate::config::Account| Listeners {
            imap: endpoints(account.imap.as_ref()),
            smtp: endpoints(account.smtp.as_ref()),
        };
        let mut entries = HashMap::new();
        let mut domains = HashMap::new();
        for id in &config.identities {
            let account_name = config.identity_account(id);
            let Some(account) = config.accounts.iter().find(|a| a.name == account_name) else {
                continue;
            };
            let address = normalize_address(&id.address);
            let l = listeners(account);
            if let Some((_, domain)) = address.rsplit_once('@') {
                domains
                    .entry(domain.to_string())
                    .or_insert_with(|| l.clone());
            }
            entries.insert(
                address.clone(),
                Entry {
                    user: id.login.clone().unwrap_or_else(|| id.address.clone()),
                    address,
                    imap: l.imap,
                    smtp: l.smtp,
                },
            );
        }
        // `secret_dir` serves the one account there is (the config checks that).
        let any = config
            .keys
            .secret_dir
            .as_ref()
            .and_then(|_| config.accounts.first())
            .map(listeners);
        Directory {
            entries,
            domains,
            any,
        }
    }

    /// What to tell the client asking for `requested`, or `None` (404) for an address
    /// that is not one or whose domain is not served. `local`: the client is on
    /// loopback, and may learn a configured identity's login and own listeners.
    pub fn lookup(&self, requested: &str, local: bool) -> Option<Entry> {
        let requested = requested.trim();
        if !valid_address(requested) {
            return None;
        }
        let address = normalize_address(requested);
        if local {
            if let Some(e) = self.entries.get(&address) {
                return Some(e.clone());
            }
        }
        let (_, domain) = address.rsplit_once('@')?;
        let l = self.domains.get(domain).or(self.any.as_ref())?;
        Some(Entry {
            address,
            user: requested.to_string(),
            imap: l.imap.clone(),
            smtp: l.smtp.clone(),
        })
    }
}

/// A plain `local@domain`: a local part of letters, digits and the RFC 5322 atom
/// punctuation (dots not leading, trailing or doubled), a domain of dot-separated labels
/// of letters, digits and `-`; at most 254 bytes. Nothing else is answered.
fn valid_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    a.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "._+-=!#$%&'*^`{|}~/?".contains(c))
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// XML character data and attribute values: the five predefined entities.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 does not allow at all are dropped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// Thunderbird's clientConfig 1.1 document for an identity.
pub fn thunderbird_xml(e: &Entry) -> String {
    let x = xml_escape;
    let domain = e.address.rsplit_once('@').map_or("", |(_, d)| d);
    let mut t = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n",
    );
    t.push_str(&format!("  <emailProvider id=\"{}\">\n", x(domain)));
    t.push_str(&format!("    <domain>{}</domain>\n", x(domain)));
    t.push_str(&format!(
        "    <displayName>{} through sealpost</displayName>\n",
        x(&e.address)
    ));
    t.push_str("    <displayShortName>sealpost</displayShortName>\n");
    for (kind, list, tag) in [
        ("imap", &e.imap, "incomingServer"),
        ("smtp", &e.smtp, "outgoingServer"),
    ] {
        for ep in list {
            t.push_str(&format!("    <{tag} type=\"{kind}\">\n"));
            t.push_str(&format!("      <hostname>{}</hostname>\n", x(&ep.host)));
            t.push_str(&format!("      <port>{}</port>\n", ep.port));
            t.push_str(&format!(
                "      <socketType>{}</socketType>\n",
                if ep.implicit_tls { "SSL" } else { "STARTTLS" }
            ));
            t.push_str("      <authentication>password-cleartext</authentication>\n");
            t.push_str(&format!("      <username>{}</username>\n", x(&e.user)));
            t.push_str(&format!("    </{tag}>\n"));
        }
    }
    t.push_str("  </emailProvider>\n</clientConfig>\n");
    t
}

/// Outlook's Autodiscover POX response for an identity: the first (preferred)
/// listener of each protocol.
pub fn autodiscover_xml(e: &Entry) -> String {
    let x = xml_escape;
    let mut t = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n\
         \x20 <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n",
    );
    t.push_str(&format!(
        "    <User>\n      <DisplayName>{}</DisplayName>\n    </User>\n",
        x(&e.address)
    ));
    t.push_str(
        "    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n",
    );
    for (kind, list) in [("IMAP", &e.imap), ("SMTP", &e.smtp)] {
        let Some(ep) = list.first() else { continue };
        t.push_str("      <Protocol>\n");
        t.push_str(&format!("        <Type>{kind}</Type>\n"));
        t.push_str(&format!("        <Server>{}</Server>\n", x(&ep.host)));
        t.push_str(&format!("        <Port>{}</Port>\n", ep.port));
        t.push_str("        <DomainRequired>off</DomainRequired>\n");
        t.push_str(&format!("        <LoginName>{}</LoginName>\n", x(&e.user)));
        t.push_str("        <SPA>off</SPA>\n");
        t.push_str("        <SSL>on</SSL>\n");
        // "SSL": TLS from the first byte; "TLS": STARTTLS.
        t.push_str(&format!(
            "        <Encryption>{}</Encryption>\n",
            if ep.implicit_tls { "SSL" } else { "TLS" }
        ));
        t.push_str("        <AuthRequired>on</AuthRequired>\n");
        if kind == "SMTP" {
            t.push_str("        <UsePOPAuth>off</UsePOPAuth>\n        <SMTPLast>off</SMTPLast>\n");
        }
        t.push_str("      </Protocol>\n");
    }
    t.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
    t
}

/// `%XX` and `+` decoding of one query value (application/x-www-form-urlencoded).
fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| form_decode(v))
}

/// The text of the first `<EMailAddress>` element of an Autodiscover request.
fn request_address(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<EMailAddress>")? + "<EMailAddress>".len();
    let len = text[start..].find("</EMailAddress>")?;
    Some(text[start..start + len].trim().to_string())
}

/// An answer: status, content type, body.
pub type Answer = (StatusCode, &'static str, String);

fn plain(status: StatusCode, text: &str) -> Answer {
    (status, "text/plain; charset=utf-8", format!("{text}\n"))
}

/// The whole protocol without sockets: what to answer to one request from a client
/// that is not on loopback.
pub fn respond(dir: &Directory, method: &Method, path: &str, query: &str, body: &[u8]) -> Answer {
    respond_to(dir, false, method, path, query, body)
}

/// What to answer to one request; `local`: the client is on loopback (see the module
/// documentation).
pub fn respond_to(
    dir: &Directory,
    local: bool,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Answer {
    let xml = "application/xml; charset=utf-8";
    let tb =
        path == "/mail/config-v1.1.xml" || path == "/.well-known/autoconfig/mail/config-v1.1.xml";
    if tb {
        if method != Method::GET && method != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        }
        let Some(address) = query_value(query, "emailaddress") else {
            return plain(StatusCode::BAD_REQUEST, "emailaddress= is missing");
        };
        return match dir.lookup(&address, local) {
            Some(e) => (StatusCode::OK, xml, thunderbird_xml(&e)),
            None => plain(StatusCode::NOT_FOUND, "no such address here"),
        };
    }
    // Outlook spells the path in either case.
    if path.eq_ignore_ascii_case("/autodiscover/autodiscover.xml") {
        if method != Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        }
        let Some(address) = request_address(body) else {
            return plain(
                StatusCode::BAD_REQUEST,
                "the request names no <EMailAddress>",
            );
        };
        return match dir.lookup(&address, local) {
            Some(e) => (StatusCode::OK, xml, autodiscover_xml(&e)),
            None => plain(StatusCode::NOT_FOUND, "no such address here"),
        };
    }
    plain(StatusCode::NOT_FOUND, "not found")
}

async fn handle(
    req: Request<Incoming>,
    dir: Arc<Directory>,
    local: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = Limited::new(req.into_body(), MAX_BODY).collect();
    let answer = match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Ok(Ok(body)) => respond_to(&dir, local, &method, &path, &query, &body.to_bytes()),
        Ok(Err(_)) => plain(StatusCode::PAYLOAD_TOO_LARGE, "request too large"),
        Err(_) => plain(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive",
        ),
    };
    tracing::info!(%method, %path, status = answer.0.as_u16(), "autoconfig request");
    let (status, content_type, text) = answer;
    let body = if method == Method::HEAD {
        String::new()
    } else {
        text
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    Ok(response)
}

/// Serves autoconfig requests on `listener` until `stop` changes. `dir` is read for
/// every connection, so a reload swaps the answers without closing the listener.
pub async fn serve(
    listener: TcpListener,
    dir: watch::Receiver<Arc<Directory>>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let counters = listener
        .local_addr()
        .ok()
        .map(|a| crate::stats::global().listener(a));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "autoconfig accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "autoconfig connection limit reached; closing");
            continue;
        };
        let dir = dir.borrow().clone();
        let open = counters.as_ref().map(|c| c.opened());
        tokio::spawn(async move {
            let _permit = permit;
            let _open = open;
            let local = peer.ip().to_canonical().is_loopback();
            let service = hyper::service::service_fn(move |req| handle(req, dir.clone(), local));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if tokio::time::timeout(Duration::from_secs(30), conn)
                .await
                .is_err()
            {
                tracing::info!(%peer, "autoconfig connection timed out");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Directory {
        let text = r#"
state_dir = "s"
[[account]]
name = "a"
[account.imap]
listen = "127.0.0.1:1143"
listen_tls = "127.0.0.1:1993"
upstream = "imap.example.org:993"
upstream_security = "tls"
[account.smtp]
listen = "127.0.0.1:1587"
upstream = "smtp.example.org:465"
upstream_security = "tls"
[[identity]]
address = "Al@Example.org"
login = "a<&>"
secret_key = "k"
"#;
        Directory::from_config(&Config::parse(text, std::path::Path::new("/x/c.toml")).unwrap())
    }

    #[test]
    fn thunderbird_answer_lists_listeners_and_escapes() {
        let d = dir();
        // A loopback client is told the configured login.
        let (s, _, body) = respond_to(
            &d,
            true,
            &Method::GET,
            "/mail/config-v1.1.xml",
            "emailaddress=al%40example.ORG",
            b"",
        );
        assert_eq!(s, StatusCode::OK, "{body}");
        assert!(
            body.contains("<port>1993</port>\n      <socketType>SSL</socketType>"),
            "{body}"
        );
        assert!(
            body.contains("<port>1143</port>\n      <socketType>STARTTLS</socketType>"),
            "{body}"
        );
        assert!(
            body.contains("<username>a&lt;&amp;&gt;</username>"),
            "{body}"
        );
        let (s, _, _) = respond(
            &d,
            &Method::GET,
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            "emailaddress=bob%40other.example",
            b"",
        );
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    #[test]
    fn autodiscover_answer_and_refusals() {
        let d = dir();
        let req = b"<Autodiscover><Request><EMailAddress>al@example.org</EMailAddress></Request></Autodiscover>";
        let (s, _, body) = respond(&d, &Method::POST, "/Autodiscover/Autodiscover.xml", "", req);
        assert_eq!(s, StatusCode::OK);
        assert!(
            body.contains(
                "<Type>IMAP</Type>\n        <Server>127.0.0.1</Server>\n        <Port>1993</Port>"
            ),
            "{body}"
        );
        assert!(body.contains("<Encryption>SSL</Encryption>"), "{body}");
        assert!(
            body.contains("<Port>1587</Port>") && body.contains("<Encryption>TLS</Encryption>"),
            "{body}"
        );
        let evil = b"<EMailAddress>x<y>@example.org</EMailAddress>";
        assert_eq!(
            respond(
                &d,
                &Method::POST,
                "/autodiscover/autodiscover.xml",
                "",
                evil
            )
            .0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            respond(&d, &Method::GET, "/autodiscover/autodiscover.xml", "", b"").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            xml_escape("<a href='x'>&\"\u{1}"),
            "&lt;a href=&apos;x&apos;&gt;&amp;&quot;"
        );
        assert_eq!(form_decode("a%2Bb+c%zz"), None);
        assert_eq!(form_decode("a%2Bb+c").as_deref(), Some("a+b c"));
    }

    /// Review F8: to a client that is not on loopback, a configured address and an
    /// unknown one at the same domain get the same answer (the requested address as user
    /// name, never the configured upstream login); other domains get 404.
    #[test]
    fn remote_clients_cannot_tell_configured_addresses_or_learn_logins() {
        let d = dir();
        let tb = |a: &str| {
            respond(
                &d,
                &Method::GET,
                "/mail/config-v1.1.xml",
                &format!("emailaddress={a}"),
                b"",
            )
        };
        let (hit, _, known) = tb("Al%40example.org");
        let (miss, _, unknown) = tb("nobody%40example.org");
        assert_eq!((hit, miss), (StatusCode::OK, StatusCode::OK));
        assert!(
            !known.contains("a&lt;&amp;&gt;"),
            "login disclosed:\n{known}"
        );
        assert!(
            known.contains("<username>Al@example.org</username>"),
            "{known}"
        );
        assert_eq!(
            known
                .replace("Al@example.org", "X")
                .replace("al@example.org", "X"),
            unknown.replace("nobody@example.org", "X")
        );
        assert_eq!(tb("al%40other.example").0, StatusCode::NOT_FOUND);
        let req = |a: &str| format!("<EMailAddress>{a}</EMailAddress>");
        let ad = |a: &str| {
            respond(
                &d,
                &Method::POST,
                "/autodiscover/autodiscover.xml",
                "",
                req(a).as_bytes(),
            )
        };
        let (hit, _, known) = ad("al@example.org");
        let (miss, _, unknown) = ad("zed@example.org");
        assert_eq!((hit, miss), (StatusCode::OK, StatusCode::OK));
        assert!(
            !known.contains("a&lt;&amp;&gt;"),
            "login disclosed:\n{known}"
        );
        assert_eq!(
            known.replace("al@example.org", "X"),
            unknown.replace("zed@example.org", "X")
        );
    }

    /// With `secret_dir` any valid address is answered; malformed ones never are.
    #[test]
    fn secret_dir_answers_any_valid_address_and_malformed_ones_get_404() {
        let text = r#"
state_dir = "s"
[keys]
secret_dir = "sec"
[[account]]
name = "a"
[account.smtp]
listen = "127.0.0.1:1587"
upstream = "smtp.example.org:465"
upstream_security = "tls"
"#;
        let d = Directory::from_config(
            &Config::parse(text, std::path::Path::new("/x/c.toml")).unwrap(),
        );
        let e = d.lookup("ann@anywhere.example", false).unwrap();
        assert_eq!(e.user, "ann@anywhere.example");
        assert_eq!(e.smtp[0].port, 1587);
        for bad in [
            "<script>@x.example",
            "a b@x.example",
            "a@x..example",
            "a@-x.example",
            "@x.example",
            "a@",
            ".a@x.example",
            "noat",
            "a\"@x.example",
        ] {
            assert!(d.lookup(bad, true).is_none(), "{bad:?}");
        }
    }
}
