//! The configuration error every component's `compile` returns. It depends on nothing, so each
//! component can own its configuration without importing the module that aggregates them.

/// A configuration error: the dotted field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted field, with list indexes (`traffic.rules[1].match`); empty for the whole
    /// configuration.
    pub field: String,
    /// What is wrong, naming the value where it is not a secret.
    pub message: String,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.field.is_empty() || self.field == "." || self.field == "?" {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about `field` (dotted, with list indexes: `traffic.rules[1].match`).
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
