//! `fp-dashboard`: the server-rendered dashboard.

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    fp_telemetry::init("fp-dashboard")
        .flush_after(async { fp_dashboard::run(fp_settings::Settings::load()?).await })
        .await
}
