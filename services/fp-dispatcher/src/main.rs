//! `fp-dispatcher`: delivers events to tenants' endpoints. Run as many as the load needs.

/// A delivery allocates and frees a few hundred small buffers (the request, its headers, the
/// attempt rows, the spans); mimalloc does that with 12-18 % less of the dispatcher's CPU than
/// glibc's malloc (`bench/README.md`, "the dispatcher on mimalloc").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Huge pages would make mimalloc's arenas resident 2 MiB at a time (80-92 MiB at the peak
    // instead of 51-60 in the bench). Built with `no_thp`, it never asks for them; a host set to
    // give them unasked (`always`) is kept from it here, for every mapping from now on.
    #[cfg(target_os = "linux")]
    let huge_pages_off = nix::sys::prctl::set_thp_disable(true);
    let settings = fp_settings::Settings::load()?;
    // Sized by the settings, not by the machine's CPUs: one thread is the cheapest per delivery,
    // and a dispatcher scales out, not up (`dispatcher.worker_threads`). One thread is Tokio's
    // current-thread scheduler: it runs tasks first come, first served, so deliveries finish
    // nearly in the order they came and one multiple-ack settles many (`bench/README.md`).
    let mut builder = match settings.dispatcher.worker_threads.get() {
        1 => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
    };
    builder.enable_all().build()?.block_on(async {
        let telemetry = fp_telemetry::init("fp-dispatcher");
        #[cfg(target_os = "linux")]
        if let Err(error) = huge_pages_off {
            tracing::warn!(%error, "transparent huge pages stay on: the dispatcher may hold more memory");
        }
        telemetry
            // Spawned so that, on the multi-threaded scheduler, the consume loop runs on the
            // workers with its deliveries rather than on this thread, waking them and being woken
            // back for every message; on the current-thread one everything runs here either way.
            .flush_after(async { tokio::spawn(fp_dispatcher::run(settings)).await? })
            .await
    })
}
