//! Putting a node's state back together: the server sends a state larger
//! than one message in parts (`AgentState.more`), split between tasks, and
//! the agent acts only on a whole state. Half a state would drop the tasks
//! in the other half, and a task missing from a state is a removed task.

use prost::Message as _;

use crate::pb::AgentState;

/// Gathers the parts of one state. A state larger than `state_bytes_max`
/// in all is refused: nothing a server of ours sends, and a bound on what
/// the agent holds.
#[derive(Default)]
pub struct Assembler {
    pending: Option<AgentState>,
}

impl Assembler {
    /// Adds a part; the whole state once this part completes it.
    pub fn add(
        &mut self,
        part: AgentState,
        state_bytes_max: usize,
    ) -> anyhow::Result<Option<AgentState>> {
        let more = part.more;
        let state = match self.pending.take() {
            None => part,
            Some(mut s) if s.revision == part.revision => {
                s.tasks.extend(part.tasks);
                s.files.extend(part.files);
                s.envs.extend(part.envs);
                s
            }
            Some(s) => anyhow::bail!(
                "a part of the node's state at revision {} came amid the parts of revision {}",
                part.revision,
                s.revision
            ),
        };
        if state.encoded_len() > state_bytes_max {
            anyhow::bail!(
                "the node's state passed {state_bytes_max} bytes in parts; refusing to hold more"
            );
        }
        if more {
            self.pending = Some(state);
            return Ok(None);
        }
        Ok(Some(AgentState {
            more: false,
            ..state
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::AgentFile;

    fn part(revision: i64, task: &str, more: bool) -> AgentState {
        AgentState {
            revision,
            tasks: vec![task.into()],
            files: vec![AgentFile {
                task: task.into(),
                path: "f".into(),
                ..Default::default()
            }],
            more,
            ..Default::default()
        }
    }

    #[test]
    fn parts_make_one_state_and_nothing_before() {
        let mut a = Assembler::default();
        assert!(a.add(part(7, "a", true), usize::MAX).unwrap().is_none());
        assert!(a.add(part(7, "b", true), usize::MAX).unwrap().is_none());
        let s = a.add(part(7, "c", false), usize::MAX).unwrap().unwrap();
        assert_eq!(s.tasks, ["a", "b", "c"]);
        assert_eq!(s.files.len(), 3);
        assert!(!s.more);
        // A whole state is itself.
        let one = a.add(part(8, "x", false), usize::MAX).unwrap().unwrap();
        assert_eq!(one.tasks, ["x"]);
    }

    #[test]
    fn mixed_or_endless_parts_are_refused() {
        let mut a = Assembler::default();
        a.add(part(7, "a", true), usize::MAX).unwrap();
        let err = a.add(part(9, "b", false), usize::MAX).unwrap_err();
        assert!(err.to_string().contains("amid the parts"), "{err}");
        let mut a = Assembler::default();
        let bound = part(7, "a", true).encoded_len() * 3;
        let err = (0..10)
            .map(|i| a.add(part(7, &format!("t{i}"), true), bound))
            .find_map(|r| r.err())
            .expect("refused past the bound");
        assert!(err.to_string().contains(&format!("{bound} bytes")), "{err}");
    }
}
