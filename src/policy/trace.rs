//! The `explain` trace: one `CheckOutcome` per check evaluated, built only
//! when asked for, free when not.

use crate::policy::CheckOutcome;

/// Collects `CheckOutcome`s when asked to; free when not.
pub(crate) struct Trace<'t> {
    out: Option<&'t mut Vec<CheckOutcome>>,
}

impl<'t> Trace<'t> {
    pub(crate) fn new(out: Option<&'t mut Vec<CheckOutcome>>) -> Self {
        Trace { out }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.out.is_some()
    }

    /// Records one check; `detail` is only built when tracing.
    pub(crate) fn record(
        &mut self,
        number: u8,
        name: &'static str,
        passed: bool,
        detail: impl FnOnce() -> String,
    ) {
        if let Some(out) = self.out.as_deref_mut() {
            out.push(CheckOutcome {
                number,
                name,
                passed,
                detail: detail(),
            });
        }
    }

    pub(crate) fn extend(&mut self, lines: Vec<CheckOutcome>) {
        if let Some(out) = self.out.as_deref_mut() {
            out.extend(lines);
        }
    }
}
