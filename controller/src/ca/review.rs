//! Who a caller is: its service-account token, checked by the API server (TokenReview) for
//! validity and for the CA's audience.
//!
//! The check sits behind [`TokenReviewer`] so the policy and the gRPC service can be tested with
//! a fixed answer; [`KubeTokenReviewer`] is the real one.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};

use super::policy::Identity;

/// Why a token did not prove an identity.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The token is invalid, expired, of another audience, or not a service account's.
    #[error("{0}")]
    Unauthenticated(String),
    /// The API server could not be asked.
    #[error("cannot review the token with the API server: {0}")]
    Unavailable(String),
}

/// Checks a bearer token and says whose it is.
#[tonic::async_trait]
pub trait TokenReviewer: Send + Sync + 'static {
    /// The service account `token` belongs to, if it is valid for the CA's audience.
    async fn review(&self, token: &str) -> Result<Identity, ReviewError>;
}

/// Reviews tokens with the Kubernetes TokenReview API.
pub struct KubeTokenReviewer {
    api: Api<TokenReview>,
    audience: String,
}

impl KubeTokenReviewer {
    /// A reviewer accepting only tokens issued for `audience` (`istio-ca`).
    pub fn new(client: kube::Client, audience: &str) -> Self {
        Self { api: Api::all(client), audience: audience.to_string() }
    }
}

#[tonic::async_trait]
impl TokenReviewer for KubeTokenReviewer {
    async fn review(&self, token: &str) -> Result<Identity, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: Some(vec![self.audience.clone()]) },
            ..TokenReview::default()
        };
        let reviewed = self
            .api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| ReviewError::Unavailable(error.to_string()))?;
        identity_of(reviewed.status.as_ref(), &self.audience)
    }
}

/// The identity a TokenReview status proves for `audience`.
pub fn identity_of(status: Option<&TokenReviewStatus>, audience: &str) -> Result<Identity, ReviewError> {
    let status = status.ok_or_else(|| ReviewError::Unauthenticated("the token review has no status".into()))?;
    if status.authenticated != Some(true) {
        let why = status.error.as_deref().filter(|error| !error.is_empty()).unwrap_or("no reason given");
        return Err(ReviewError::Unauthenticated(format!("the token is not valid for audience {audience:?}: {why}")));
    }
    // An authenticator that ignores audiences answers without them; such a token is refused.
    if !status.audiences.iter().flatten().any(|granted| granted == audience) {
        return Err(ReviewError::Unauthenticated(format!("the token is not issued for audience {audience:?}")));
    }
    let username = status.user.as_ref().and_then(|user| user.username.as_deref()).unwrap_or_default();
    Identity::from_username(username).ok_or_else(|| {
        ReviewError::Unauthenticated(format!(
            "{username:?} is not a service account; use a pod's service-account token"
        ))
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn status(authenticated: bool, audiences: &[&str], username: &str) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(ToString::to_string).collect()),
            user: Some(UserInfo { username: Some(username.into()), ..UserInfo::default() }),
            error: (!authenticated).then(|| "token expired".to_string()),
        }
    }

    #[test]
    fn an_authenticated_service_account_of_the_audience_is_its_identity() {
        let identity = identity_of(Some(&status(true, &["istio-ca"], "system:serviceaccount:a:reviews")), "istio-ca");
        assert_eq!(identity.unwrap(), Identity { namespace: "a".into(), service_account: "reviews".into() });
    }

    #[test]
    fn other_audiences_users_and_failures_are_unauthenticated() {
        let refused = |status: Option<TokenReviewStatus>| match identity_of(status.as_ref(), "istio-ca") {
            Err(ReviewError::Unauthenticated(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(refused(Some(status(false, &[], ""))).contains("token expired"));
        assert!(
            refused(Some(status(true, &["https://kubernetes.default.svc"], "system:serviceaccount:a:b")))
                .contains("audience \"istio-ca\"")
        );
        assert!(refused(Some(status(true, &["istio-ca"], "jane"))).contains("not a service account"));
        assert!(refused(None).contains("no status"));
    }
}
