//! `fp-dispatcher`: delivers events to tenants' endpoints. Run as many as the load needs.

fn main() -> anyhow::Result<()> {
    let settings = fp_settings::Settings::load()?;
    // Sized by the settings, not by the machine's CPUs: one thread is the cheapest per delivery,
    // and a dispatcher scales out, not up (`dispatcher.worker_threads`). One thread is Tokio's
    // current-thread scheduler, which spawns and wakes tasks without the multi-threaded one's
    // stealing and cross-thread bookkeeping.
    let mut runtime = match settings.dispatcher.worker_threads.get() {
        1 => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
    };
    runtime.enable_all().build()?.block_on(async {
        fp_telemetry::init("fp-dispatcher")
            // The service runs as a task on the runtime's workers rather than on this thread:
            // its consume loop then spawns each delivery, and joins it, on the thread that runs
            // it, instead of waking a worker and being woken back for every message.
            .flush_after(async { tokio::spawn(fp_dispatcher::run(settings)).await? })
            .await
    })
}
