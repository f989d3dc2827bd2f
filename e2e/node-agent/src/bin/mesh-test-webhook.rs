//! `mesh-test-webhook`: the smallest mutating admission webhook, for proving that the API server
//! of the local cluster reaches a webhook behind a Service run by the node agent.
//!
//! - `mesh-test-webhook gen-cert --out DIR --dns NAME...` writes `ca.crt`, `tls.crt`, `tls.key`
//!   (a throwaway CA and a serving certificate for NAMEs).
//! - `mesh-test-webhook serve --cert F --key F [--port 8443]` answers every AdmissionReview with
//!   "allowed" and a JSON patch adding the label `mesh-test-webhook=called`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a CA and a serving certificate for the given DNS names.
    GenCert {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, required = true)]
        dns: Vec<String>,
    },
    /// Serve the webhook over HTTPS.
    Serve {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value_t = 8443)]
        port: u16,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::GenCert { out, dns } => gen_cert(&out, dns),
        Cmd::Serve { cert, key, port } => serve(&cert, &key, port).await,
    }
}

fn gen_cert(out: &std::path::Path, dns: Vec<String>) -> Result<()> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "mesh-test-webhook CA");
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(dns.clone())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, dns[0].clone());
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("ca.crt"), ca_cert.pem())?;
    std::fs::write(out.join("tls.crt"), cert.pem())?;
    std::fs::write(out.join("tls.key"), key.serialize_pem())?;
    Ok(())
}

async fn serve(cert: &std::path::Path, key: &std::path::Path, port: u16) -> Result<()> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).context("reading cert")?.collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key).context("reading key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    eprintln!("mesh-test-webhook listening on :{port}");
    loop {
        let (tcp, peer) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let result = async {
                let mut tls = acceptor.accept(tcp).await?;
                // One request per connection is all the API server needs from us.
                let body = read_request(&mut tls).await?;
                let reply = review(&body)?;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                tls.write_all(resp.as_bytes()).await?;
                tls.shutdown().await?;
                anyhow::Ok(())
            };
            if let Err(e) = result.await {
                eprintln!("request from {peer}: {e:#}");
            }
        });
    }
}

/// Reads one HTTP/1.1 request and returns its body (Content-Length framing).
async fn read_request<S: AsyncReadExt + Unpin>(s: &mut S) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the request was complete");
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Ok(buf[end + 4..end + 4 + len].to_vec());
        }
    }
}

/// The AdmissionReview answer: allowed, plus a label.
fn review(body: &[u8]) -> Result<String> {
    let req: Value = serde_json::from_slice(body).context("AdmissionReview JSON")?;
    let uid = req["request"]["uid"].clone();
    let has_labels = req["request"]["object"]["metadata"]["labels"].is_object();
    let patch = if has_labels {
        json!([{ "op": "add", "path": "/metadata/labels/mesh-test-webhook", "value": "called" }])
    } else {
        json!([{ "op": "add", "path": "/metadata/labels", "value": { "mesh-test-webhook": "called" } }])
    };
    // ByteString serializes as base64, which is what `patch` must be.
    let patch = k8s_openapi::ByteString(serde_json::to_vec(&patch)?);
    let api_version = req["apiVersion"].as_str().unwrap_or("admission.k8s.io/v1");
    let resp = json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": { "uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch },
    });
    Ok(resp.to_string())
}
