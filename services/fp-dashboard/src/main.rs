//! `fp-dashboard`: the server-rendered dashboard.

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    fp_telemetry::init("fp-dashboard");
    let settings = fp_settings::Settings::load()?;
    fp_dashboard::run(settings).await
}
