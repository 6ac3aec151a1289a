//! Capabilities a deployment declares (`models[].capabilities`), and capability mode:
//! the best model for the request's task among those that pass the hard filters.

use super::score::Task;
use super::table::Deployment;

/// One capability name a model may declare (DESIGN §4's list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Function / tool calling.
    Tools,
    /// `response_format` JSON output.
    JsonMode,
    /// Image inputs.
    Vision,
    /// Good at code.
    Code,
    /// Good at math.
    Math,
    /// Good at multi-step reasoning.
    Reasoning,
    /// Good at legal text.
    Legal,
    /// Good at prose.
    Writing,
}

impl Capability {
    /// Every capability, in bit order.
    pub const ALL: [Capability; 8] = [
        Capability::Tools,
        Capability::JsonMode,
        Capability::Vision,
        Capability::Code,
        Capability::Math,
        Capability::Reasoning,
        Capability::Legal,
        Capability::Writing,
    ];

    /// The name config files use.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Tools => "tools",
            Capability::JsonMode => "json_mode",
            Capability::Vision => "vision",
            Capability::Code => "code",
            Capability::Math => "math",
            Capability::Reasoning => "reasoning",
            Capability::Legal => "legal",
            Capability::Writing => "writing",
        }
    }

    /// The capability called `name`, if it is one.
    pub fn from_name(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The capability that marks a model as strong at `task` (`chat` has none: every
    /// model chats).
    pub fn for_task(task: Task) -> Option<Capability> {
        match task {
            Task::Chat => None,
            Task::Code => Some(Capability::Code),
            Task::Math => Some(Capability::Math),
            Task::Reasoning => Some(Capability::Reasoning),
            Task::Legal => Some(Capability::Legal),
            Task::Writing => Some(Capability::Writing),
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps(u16);

impl Caps {
    /// The set holding `list`.
    pub fn of(list: &[Capability]) -> Caps {
        Caps(list.iter().fold(0, |acc, c| acc | c.bit()))
    }

    /// Whether `c` is in the set.
    pub fn has(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }

    /// The names in the set, in [`Capability::ALL`] order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Capability::ALL.into_iter().filter(move |c| self.has(*c)).map(Capability::as_str)
    }
}

/// Whether `d` declares the capability that marks strength at `task` (`false` for
/// `chat`, and for a deployment that declares no capabilities at all).
pub fn strong_at(d: &Deployment, task: Task) -> bool {
    match (Capability::for_task(task), d.capabilities) {
        (Some(c), Some(caps)) => caps.has(c),
        _ => false,
    }
}

/// Capability mode's order: models strong at `task` first, then by `quality`
/// (highest first), then by price (cheapest first); `price` gives each candidate's
/// expected price. A stable sort keeps the failover order among equals.
pub fn order<T>(candidates: &mut [T], task: Task, deployment: impl Fn(&T) -> &Deployment, price: impl Fn(&T) -> f64) {
    candidates.sort_by(|a, b| {
        let (da, db) = (deployment(a), deployment(b));
        strong_at(db, task)
            .cmp(&strong_at(da, task))
            .then(db.quality.total_cmp(&da.quality))
            .then(price(a).total_cmp(&price(b)))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sets_hold_what_they_were_given() {
        for c in Capability::ALL {
            assert_eq!(Capability::from_name(c.as_str()), Some(c));
        }
        assert_eq!(Capability::from_name("telepathy"), None);
        let caps = Caps::of(&[Capability::Vision, Capability::Legal]);
        assert!(caps.has(Capability::Vision) && caps.has(Capability::Legal) && !caps.has(Capability::Tools));
        assert_eq!(caps.names().collect::<Vec<_>>(), ["vision", "legal"]);
        assert_eq!(Capability::for_task(Task::Chat), None);
        assert_eq!(Capability::for_task(Task::Legal), Some(Capability::Legal));
    }
}
