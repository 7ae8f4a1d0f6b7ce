//! The three states the benchmarks compare, entered in turn within one boot: bulkhead
//! attached (the agent running), no programs (the agent stopped and `bulkhead uninstall`
//! run, so no link is left), and the floor (empty programs on the same hooks).

use std::process::Command;

use super::floor::{self, Floor};
use crate::scenarios_lifecycle::{CONFIG, signal, start_agent, status, wait_gone};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    Bulkhead,
    NoPrograms,
    Floor,
}

impl State {
    pub const ALL: [State; 3] = [State::Bulkhead, State::NoPrograms, State::Floor];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Bulkhead => "bulkhead",
            State::NoPrograms => "none",
            State::Floor => "floor",
        }
    }
}

enum Current {
    Agent { pid: i32 },
    Nothing,
    Floor(Floor),
}

/// Moves the guest between states; knows which one it is in.
pub struct Machine {
    current: Current,
}

impl Machine {
    /// Takes over the agent /init started.
    pub fn adopt() -> Result<Self, String> {
        let pid = status()
            .map_err(|err| format!("no agent to start from: {err}"))?
            .pid;
        Ok(Self {
            current: Current::Agent { pid: pid as i32 },
        })
    }

    pub fn agent_pid(&self) -> Option<i32> {
        match self.current {
            Current::Agent { pid } => Some(pid),
            _ => None,
        }
    }

    pub fn enter(&mut self, state: State) -> Result<(), String> {
        match (&self.current, state) {
            (Current::Agent { .. }, State::Bulkhead)
            | (Current::Nothing, State::NoPrograms)
            | (Current::Floor(_), State::Floor) => return Ok(()),
            _ => {}
        }
        self.leave()?;
        self.current = match state {
            State::Bulkhead => Current::Agent {
                pid: start_agent()? as i32,
            },
            State::NoPrograms => Current::Nothing,
            State::Floor => Current::Floor(floor::attach()?),
        };
        Ok(())
    }

    /// Back to no programs at all.
    fn leave(&mut self) -> Result<(), String> {
        match std::mem::replace(&mut self.current, Current::Nothing) {
            Current::Agent { pid } => {
                signal(pid, libc::SIGTERM)?;
                wait_gone(pid)?;
                // The pins outlive the agent by design; only uninstall detaches them.
                let output = Command::new("bulkhead")
                    .args(["uninstall", "--config", CONFIG])
                    .output()
                    .map_err(|err| format!("bulkhead uninstall: {err}"))?;
                if !output.status.success() {
                    return Err(format!(
                        "bulkhead uninstall: {}",
                        String::from_utf8_lossy(&output.stderr)
                    ));
                }
            }
            Current::Floor(floor) => drop(floor),
            Current::Nothing => {}
        }
        Ok(())
    }
}
