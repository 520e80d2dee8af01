//! Lost-write checking: every acknowledged append must be in the final read
//! of its key. Appended values are unique tokens in our workloads (as in
//! Jepsen's), so presence is a substring test; an unknown-outcome append may
//! or may not be there.

use std::collections::BTreeMap;

use super::history::Outcome;
use super::model::KvOp;
use super::parse::KvHistory;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWrite {
    pub key: String,
    pub value: String,
    /// Where the acknowledged append was invoked in the history.
    pub line: usize,
}

/// Acknowledged appends missing from `final_values` (key → value read at
/// the end, after the cluster healed). A key absent from the final read
/// counts as empty.
pub fn lost_appends(
    history: &KvHistory,
    final_values: &BTreeMap<String, String>,
) -> Vec<LostWrite> {
    let mut lost = Vec::new();
    for (key, ops) in history {
        let fin = final_values.get(key).map(String::as_str).unwrap_or("");
        for op in ops {
            if let (KvOp::Append(v), Outcome::Ok(_)) = (&op.input, &op.outcome) {
                if !fin.contains(v.as_str()) {
                    lost.push(LostWrite {
                        key: key.clone(),
                        value: v.clone(),
                        line: op.line,
                    });
                }
            }
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::parse::kv_edn;

    #[test]
    fn acknowledged_appends_must_survive() {
        let h = "{:process 0, :type :invoke, :f :append, :key \"k\", :value \"x1y\"}\n\
                 {:process 0, :type :ok, :f :append, :key \"k\", :value \"x1y\"}\n\
                 {:process 1, :type :invoke, :f :append, :key \"k\", :value \"x2y\"}\n\
                 {:process 1, :type :info, :f :append, :key \"k\", :value \"x2y\"}\n\
                 {:process 2, :type :invoke, :f :append, :key \"j\", :value \"x3y\"}\n\
                 {:process 2, :type :ok, :f :append, :key \"j\", :value \"x3y\"}\n";
        let h = kv_edn(h).unwrap();
        let mut fin = BTreeMap::new();
        fin.insert("k".to_string(), "x1y".to_string());
        // x2y was never acknowledged: its absence is fine. x3y was: lost.
        assert_eq!(
            lost_appends(&h, &fin),
            vec![LostWrite {
                key: "j".into(),
                value: "x3y".into(),
                line: 5
            }]
        );
        fin.insert("j".to_string(), "x3y".to_string());
        assert!(lost_appends(&h, &fin).is_empty());
    }
}
