//! The `terrane` processes a bench starts (orchestrator, hosts, gateway): each is this same
//! executable, says it is ready with a first line on stdout, and is killed when the bench ends
//! however it ends: by the drop of [`Children`] (the bench finished, failed or panicked), or,
//! on Linux, by the kernel when the bench itself is killed (`PR_SET_PDEATHSIG`: SIGKILL to
//! each child when the thread that started it ends; benches start them from the main thread).

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

/// Child processes killed when the bench ends, however it ends.
#[derive(Default)]
pub struct Children(Vec<Child>);

impl Children {
    /// Starts `terrane ARGS…` and waits for its first line on stdout. Its stderr is shown
    /// when `TERRANE_LOG` is set, and dropped otherwise.
    pub fn spawn(&mut self, args: &[&str]) -> anyhow::Result<()> {
        let mut command = Command::new(std::env::current_exe()?);
        command.args(args).stdout(Stdio::piped()).stderr(if std::env::var_os("TERRANE_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            let parent = std::process::id() as libc::pid_t;
            // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, _exit).
            unsafe {
                command.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The bench died before the request took effect: follow it now.
                    if libc::getppid() != parent {
                        libc::_exit(1);
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn()?;
        let mut first = String::new();
        let stdout = child.stdout.take().expect("stdout is piped");
        let read = std::io::BufReader::new(stdout).read_line(&mut first);
        self.0.push(child);
        read?;
        anyhow::ensure!(!first.is_empty(), "terrane {} did not start", args.join(" "));
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
