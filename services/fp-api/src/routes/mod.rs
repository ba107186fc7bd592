//! HTTP routes of `/api/v2`.

mod logs;
mod submissions;
mod webhook_config;

use actix_web::web;

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/api/v2")
            .route("/webhooks/config", web::get().to(webhook_config::get))
            .route("/webhooks/config", web::put().to(webhook_config::put))
            .route("/webhooks/config", web::delete().to(webhook_config::delete))
            .route("/webhooks/logs", web::get().to(logs::list))
            .route("/submissions", web::post().to(submissions::create))
            .route("/submissions", web::get().to(submissions::list))
            .route("/submissions/{id}", web::get().to(submissions::get))
            .route(
                "/submissions/{id}",
                web::patch().to(submissions::change_status),
            ),
    );
}
