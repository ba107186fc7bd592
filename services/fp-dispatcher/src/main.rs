//! `fp-dispatcher`: delivers events to tenants' endpoints. Run as many as the load needs.

fn main() -> anyhow::Result<()> {
    let settings = fp_settings::Settings::load()?;
    // Sized by the settings, not by the machine's CPUs: one thread is the cheapest per delivery,
    // and a dispatcher scales out, not up (`dispatcher.worker_threads`).
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.dispatcher.worker_threads.get())
        .enable_all()
        .build()?
        .block_on(async {
            fp_telemetry::init("fp-dispatcher")
                // The service runs as a task on the runtime's workers rather than on this thread:
                // its consume loop then spawns each delivery, and joins it, on the thread that
                // runs it, instead of waking a worker and being woken back for every message.
                .flush_after(async { tokio::spawn(fp_dispatcher::run(settings)).await? })
                .await
        })
}
