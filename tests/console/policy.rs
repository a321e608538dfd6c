//! The Content-Security-Policy in force in Chromium: the console's own
//! script, style and same-origin sockets work (the other tests use them),
//! while inline code and a connection to any other origin — even another
//! broker on the same machine — are refused and reported.

use crate::browser::Browser;
use crate::helpers::{spawn_app_with, Backend};
use crate::ui;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_refuses_inline_code_and_other_origins() {
    let app = spawn_app_with(Backend::Memory, &[]).await;
    let other = spawn_app_with(Backend::Memory, &[]).await;
    let browser = Browser::launch().await;
    let page = ui::open(&browser, &app).await;
    ui::assert_clean_log(&page);
    let inline = "(() => { const s = document.createElement('script'); \
                  s.textContent = 'window.inlineRan = true'; document.body.appendChild(s); \
                  return window.inlineRan === true; })()";
    assert_eq!(page.eval(inline).await, false, "an inline script ran");
    let elsewhere = other.address.replace("http://", "ws://") + "/ws/rooms/r";
    let socket = format!(
        "new Promise(done => {{ const w = new WebSocket({elsewhere:?}); \
           w.onopen = () => done('open'); w.onerror = () => done('refused'); }})"
    );
    assert_eq!(page.eval(&socket).await, "refused");
    let own = "fetch('/api/health').then(r => r.status)";
    assert_eq!(page.eval(own).await, 200);
    let log = page.log();
    let refusals = log
        .lines()
        .filter(|l| l.contains("Content Security Policy"));
    let refusals: Vec<&str> = refusals.collect();
    assert!(
        refusals.iter().any(|l| l.contains("script-src")),
        "no script-src refusal:\n{log}"
    );
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("connect-src") && l.contains(&elsewhere)),
        "no connect-src refusal for {elsewhere}:\n{log}"
    );
}
