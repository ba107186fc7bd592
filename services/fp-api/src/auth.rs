//! API-key authentication. Handlers that take [`AuthenticatedTenant`] only run for a live key, and
//! every query they make is scoped by that tenant, never by an id from the request.

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

pub struct AuthenticatedTenant(pub Uuid);

impl FromRequest for AuthenticatedTenant {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let key = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(|key| key.trim().to_owned());
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let (Some(key), Some(state)) = (key, state) else {
                return Err(ApiError::Unauthorized);
            };
            let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
            let hash = fp_domain::api_key::hash_key(&key);
            fp_store::identity::tenant_for_key_hash(&mut conn, &hash)
                .await?
                .map(AuthenticatedTenant)
                .ok_or(ApiError::Unauthorized)
        })
    }
}
