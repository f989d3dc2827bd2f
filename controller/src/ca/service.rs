//! The gRPC service `mesh.ca.v1.CertificateAuthority`: a token and a CSR in, a certificate out.

use std::sync::Arc;

use proto::ca::certificate_authority_server::{CertificateAuthority, CertificateAuthorityServer};
use proto::ca::{SignCertificateRequest, SignCertificateResponse};
use rcgen::CertificateSigningRequestParams;
use tonic::{Request, Response, Status};

use super::authority::Authority;
use super::policy::{Policy, Refusal};
use super::review::{ReviewError, TokenReviewer};

/// Whether a Service of the controller's namespace exists, by name.
pub type ServiceLookup = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Signs workload certificates for callers that prove a service account.
pub struct CaService {
    authority: Arc<Authority>,
    reviewer: Arc<dyn TokenReviewer>,
    policy: Policy,
    services: ServiceLookup,
}

impl CaService {
    /// A service signing with `authority` for callers `reviewer` authenticates, within `policy`.
    pub fn new(
        authority: Arc<Authority>,
        reviewer: Arc<dyn TokenReviewer>,
        policy: Policy,
        services: ServiceLookup,
    ) -> Self {
        Self { authority, reviewer, policy, services }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> CertificateAuthorityServer<Self> {
        CertificateAuthorityServer::new(self)
    }
}

#[tonic::async_trait]
impl CertificateAuthority for CaService {
    async fn sign_certificate(
        &self,
        request: Request<SignCertificateRequest>,
    ) -> Result<Response<SignCertificateResponse>, Status> {
        let token = bearer_token(&request)?;
        let identity = self.reviewer.review(token).await.map_err(|error| match error {
            ReviewError::Unauthenticated(message) => Status::unauthenticated(message),
            ReviewError::Unavailable(message) => Status::unavailable(message),
        })?;
        let request = request.into_inner();
        let csr = CertificateSigningRequestParams::from_pem(&request.csr_pem).map_err(|error| {
            Status::invalid_argument(format!("csr_pem is not a valid PEM PKCS#10 request: {error}"))
        })?;
        let granted = self.policy.grant(
            &identity,
            &csr.params.subject_alt_names,
            request.requested_validity_seconds,
            self.services.as_ref(),
        );
        let (names, validity) = granted.map_err(|refusal| {
            tracing::info!(identity = %identity.spiffe_id(&self.policy.trust_domain), %refusal, "certificate refused");
            match refusal {
                Refusal::PermissionDenied(message) => Status::permission_denied(message),
                Refusal::Invalid(message) => Status::invalid_argument(message),
            }
        })?;
        let issued = self
            .authority
            .issue(&csr.public_key, &names, validity)
            .map_err(|error| Status::invalid_argument(format!("cannot sign this request: {error}")))?;
        tracing::info!(identity = %names.uris[0], dns = ?names.dns, expires = %issued.not_after, "certificate issued");
        Ok(Response::new(SignCertificateResponse {
            cert_chain_pem: vec![issued.leaf_pem],
            trust_bundle_pem: vec![self.authority.root_pem().to_string()],
            expires_at_unix_seconds: issued.not_after.unix_timestamp(),
        }))
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer_token<T>(request: &Request<T>) -> Result<&str, Status> {
    let missing = || {
        Status::unauthenticated(
            "no service-account token: send `authorization: Bearer <token>` with the pod's token for the CA's audience",
        )
    };
    let value = request.metadata().get("authorization").ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim);
    token.filter(|token| !token.is_empty()).ok_or_else(missing)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    fn with_authorization(value: &str) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        request.metadata_mut().insert("authorization", value.parse().unwrap());
        request
    }

    #[test]
    fn the_token_is_the_bearer_credential() {
        assert_eq!(bearer_token(&with_authorization("Bearer abc.def")).unwrap(), "abc.def");
        for refused in ["Basic abc", "Bearer ", "abc"] {
            let status = bearer_token(&with_authorization(refused)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{refused}");
        }
        assert_eq!(bearer_token(&tonic::Request::new(())).unwrap_err().code(), tonic::Code::Unauthenticated);
    }
}
