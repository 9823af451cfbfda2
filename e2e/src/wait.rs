//! Waiting for the cluster to reach a state, with a deadline and a message that
//! says what was awaited and what was seen last.

use std::future::Future;
use std::time::Duration;

use crate::Error;

/// How often [`wait_until`] probes.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Calls `probe` until it returns `Ok(value)`, and returns that value; an
/// `Err(reason)` means "not yet", and the last reason goes into the
/// [`Error::WaitTimedOut`] returned when `timeout` passes first.
///
/// ```no_run
/// # async fn example(client: kube::Client) -> Result<(), roam_e2e::Error> {
/// use k8s_openapi::api::core::v1::ServiceAccount;
/// let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client, "default");
/// roam_e2e::wait_until("service account default/default", std::time::Duration::from_secs(30), || async {
///     match accounts.get_opt("default").await {
///         Ok(Some(_)) => Ok(()),
///         Ok(None) => Err("not created yet".to_string()),
///         Err(e) => Err(e.to_string()),
///     }
/// })
/// .await
/// # }
/// ```
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(value) => return Ok(value),
            Err(reason) => reason,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::WaitTimedOut {
                what: what.to_string(),
                after: timeout,
                last,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
