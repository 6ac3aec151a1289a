//! The capability names a model may declare (`models[].capabilities`, DESIGN §4) and
//! sets of them.

use super::score::Task;

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
