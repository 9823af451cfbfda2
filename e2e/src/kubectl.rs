//! Running `kubectl` (the pinned one from `.tools/bin`, else the one on
//! `PATH`: [`kubectl_path`]) against a test cluster.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::{Error, kubectl_path, tool_path};

/// Runs `kubectl --kubeconfig <kubeconfig> <args>`, feeding `input` to its
/// standard input, and returns its standard output.
pub(crate) async fn run(
    kubeconfig: &Path,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, Error> {
    let binary = kubectl_path().ok_or_else(|| Error::ToolMissing {
        tool: tool_path("kubectl"),
    })?;
    let shown = args.join(" ");
    let run_error = |source| Error::RunKubectl {
        args: shown.clone(),
        source,
    };
    let mut child = tokio::process::Command::new(&binary)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(run_error)?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes()).await.map_err(run_error)?;
        // Dropping stdin closes it, so kubectl sees the end of its input.
    }
    let output = child.wait_with_output().await.map_err(run_error)?;
    if !output.status.success() {
        return Err(Error::KubectlFailed {
            args: shown,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
