//! The signing root: a self-signed ECDSA P-256 CA certificate and its key, and the one function
//! that turns a public key and a set of names into a short-lived leaf certificate.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use time::OffsetDateTime;

/// How long a generated root is valid: long enough never to be the reason a mesh breaks.
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far back a leaf's `notBefore` is set, so a peer whose clock is a little behind accepts it.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Why the CA could not be built or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// The stored root certificate is not a PEM X.509 certificate.
    #[error("the root certificate is not a PEM X.509 certificate: {0}")]
    RootCertificate(rcgen::Error),
    /// The stored root key is not a PEM PKCS#8 key that rcgen can sign with.
    #[error("the root key is not a PEM PKCS#8 private key usable for signing: {0}")]
    RootKey(rcgen::Error),
    /// rcgen refused to build a certificate (a malformed name, an unsupported key).
    #[error("cannot build the certificate: {0}")]
    Build(rcgen::Error),
    /// rustls refused a key rcgen generated.
    #[error("cannot load the serving key into rustls: {0}")]
    ServingKey(String),
}

/// The root's certificate and key in PEM, as they are stored. The key never appears in `Debug`.
#[derive(Clone)]
pub struct RootPem {
    /// The CA certificate.
    pub cert: String,
    /// Its PKCS#8 private key.
    pub key: String,
}

impl std::fmt::Debug for RootPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootPem").field("cert", &self.cert).field("key", &"<redacted>").finish()
    }
}

/// The names a leaf certificate is issued for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeafNames {
    /// URI SANs (the SPIFFE ID).
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
}

/// A signed leaf certificate.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The leaf, PEM-encoded (there are no intermediates: the root signs leaves directly).
    pub leaf_pem: String,
    /// The leaf, DER-encoded.
    pub leaf_der: Vec<u8>,
    /// When it expires.
    pub not_after: OffsetDateTime,
}

/// The certificate authority: the root and its signing key.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    root: RootPem,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("root", &self.root).finish_non_exhaustive()
    }
}

impl Authority {
    /// A new self-signed root for `trust_domain`, valid for ten years.
    pub fn generate(trust_domain: &str) -> Result<Authority, AuthorityError> {
        let key = KeyPair::generate().map_err(AuthorityError::Build)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, trust_domain);
        params.distinguished_name.push(DnType::CommonName, "mesh root CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + ROOT_VALIDITY;
        let cert = params.self_signed(&key).map_err(AuthorityError::Build)?;
        let root = RootPem { cert: cert.pem(), key: key.serialize_pem() };
        Ok(Authority { issuer: Issuer::new(params, key), root })
    }

    /// The CA stored as `root` (loaded on every start after the first).
    pub fn from_pem(root: RootPem) -> Result<Authority, AuthorityError> {
        let key = KeyPair::from_pem(&root.key).map_err(AuthorityError::RootKey)?;
        let issuer = Issuer::from_ca_cert_pem(&root.cert, key).map_err(AuthorityError::RootCertificate)?;
        Ok(Authority { issuer, root })
    }

    /// The root certificate (PEM), which every peer trusts.
    pub fn root_pem(&self) -> &str {
        &self.root.cert
    }

    /// The root certificate and key, to store.
    pub fn root(&self) -> &RootPem {
        &self.root
    }

    /// Signs a leaf for `public_key` with exactly `names`, valid for `validity` from now (and a
    /// few minutes before, for clock skew); usable as a TLS client and server certificate.
    pub fn issue(
        &self,
        public_key: &impl PublicKeyData,
        names: &LeafNames,
        validity: Duration,
    ) -> Result<Issued, AuthorityError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        for uri in &names.uris {
            params.subject_alt_names.push(SanType::URI(uri.as_str().try_into().map_err(AuthorityError::Build)?));
        }
        for dns in &names.dns {
            params.subject_alt_names.push(SanType::DnsName(dns.as_str().try_into().map_err(AuthorityError::Build)?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + validity;
        let cert = params.signed_by(public_key, &self.issuer).map_err(AuthorityError::Build)?;
        Ok(Issued { leaf_pem: cert.pem(), leaf_der: cert.der().to_vec(), not_after: params.not_after })
    }
}

/// A positive 127-bit serial number from the system's cryptographic random source: unique with
/// overwhelming probability, and unpredictable (RFC 5280 and the CA/Browser Forum ask for
/// unpredictable serials, which defeat chosen-prefix collisions against the signature).
fn random_serial() -> SerialNumber {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // The system source (getrandom) does not fail on Linux once the kernel's pool is seeded.
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system random source");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}
