//! The settings of one file as a table: rejects duplicate and unknown keys, then hands each
//! setting out once, typed, to the reader that knows what it means.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::Path;

use crate::error::{ManifestError, Problem};
use crate::syntax::{ListItem, Setting, Value};

pub(crate) struct Table<'f> {
    file: &'f Path,
    settings: Vec<Setting>,
}

impl<'f> Table<'f> {
    /// Checks every setting, in file order, against the keys this kind of file allows;
    /// `unsupported` tells the keys that xl knows but we do not support yet.
    pub fn new(
        file: &'f Path,
        settings: Vec<Setting>,
        allowed: &[&str],
        unsupported: impl Fn(&str) -> bool,
    ) -> Result<Self, ManifestError> {
        let mut first_lines: HashMap<&str, usize> = HashMap::new();
        for setting in &settings {
            let key = setting.key.as_str();
            if !allowed.contains(&key) {
                let problem = if unsupported(key) {
                    Problem::UnsupportedKey {
                        key: key.to_owned(),
                    }
                } else {
                    Problem::UnknownKey {
                        key: key.to_owned(),
                        allowed: allowed.join(", "),
                    }
                };
                return Err(ManifestError::new(file, Some(setting.line), None, problem));
            }
            if let Some(&first_line) = first_lines.get(key) {
                let problem = Problem::DuplicateKey {
                    first_line,
                    second_line: setting.line,
                };
                return Err(setting.error(file, problem));
            }
            first_lines.insert(key, setting.line);
        }
        Ok(Table { file, settings })
    }

    /// Removes and returns the setting of `key`, if the file has one.
    pub fn take(&mut self, key: &str) -> Option<Setting> {
        let index = self
            .settings
            .iter()
            .position(|setting| setting.key == key)?;
        Some(self.settings.remove(index))
    }

    /// Like [`Table::take`], for a key the file must set; `hint` is appended to the message.
    pub fn require(&mut self, key: &str, hint: &'static str) -> Result<Setting, ManifestError> {
        self.take(key).ok_or_else(|| {
            ManifestError::new(self.file, None, Some(key), Problem::MissingKey { hint })
        })
    }
}

impl Setting {
    /// An error about this setting: its file, its line, its key.
    pub fn error(&self, file: &Path, problem: Problem) -> ManifestError {
        ManifestError::new(file, Some(self.line), Some(&self.key), problem)
    }

    /// An "expected `expected`, found <the value>" error about this setting.
    pub fn invalid(&self, file: &Path, expected: &str) -> ManifestError {
        let found = self.value.describe();
        self.error(
            file,
            Problem::Invalid {
                expected: expected.to_owned(),
                found,
            },
        )
    }

    pub fn string(&self, file: &Path, expected: &str) -> Result<&str, ManifestError> {
        match &self.value {
            Value::Str(text) => Ok(text),
            _ => Err(self.invalid(file, expected)),
        }
    }

    pub fn integer(&self, file: &Path, expected: &str) -> Result<u64, ManifestError> {
        match self.value {
            Value::Int(number) => Ok(number),
            _ => Err(self.invalid(file, expected)),
        }
    }

    /// An integer in `range`, or an error naming the range and `unit`.
    pub fn integer_in(
        &self,
        file: &Path,
        expected: &str,
        range: RangeInclusive<u32>,
        unit: &'static str,
    ) -> Result<u32, ManifestError> {
        let found = self.integer(file, expected)?;
        match u32::try_from(found) {
            Ok(number) if range.contains(&number) => Ok(number),
            _ => {
                let (min, max) = (u64::from(*range.start()), u64::from(*range.end()));
                Err(self.error(
                    file,
                    Problem::OutOfRange {
                        found,
                        min,
                        max,
                        unit,
                    },
                ))
            }
        }
    }

    pub fn list(&self, file: &Path, expected: &str) -> Result<&[ListItem], ManifestError> {
        match &self.value {
            Value::List(items) => Ok(items),
            _ => Err(self.invalid(file, expected)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::parse_settings;

    fn table(text: &str) -> Result<Table<'static>, ManifestError> {
        let file = Path::new("t.cfg");
        Table::new(file, parse_settings(file, text)?, &["a", "b"], |key| {
            key == "disk"
        })
    }

    #[test]
    fn takes_each_setting_once() {
        let mut table = table("b = 2\na = 'x'\n").unwrap();
        assert_eq!(table.take("a").unwrap().line, 2);
        assert!(table.take("a").is_none());
        assert_eq!(table.require("b", "").unwrap().value, Value::Int(2));
        let missing = table.require("b", " (hint)").err().unwrap().to_string();
        assert_eq!(missing, "t.cfg: key `b`: required key is missing (hint)");
    }

    #[test]
    fn the_first_bad_key_in_file_order_is_reported() {
        let message = |text| table(text).err().unwrap().to_string();
        assert_eq!(
            message("a = 1\nc = 2\na = 3"),
            "t.cfg:2: unknown key `c` (keys allowed here: a, b)"
        );
        assert_eq!(
            message("a = 1\na = 3\nc = 2"),
            "t.cfg:2: key `a`: set twice: first on line 1, again on line 2"
        );
        assert_eq!(
            message("disk = []\na = 1"),
            "t.cfg:1: key `disk` is not supported yet"
        );
    }

    #[test]
    fn typed_getters_name_what_they_expected() {
        let mut table = table("a = [ 'x' ]\nb = 5").unwrap();
        let a = table.take("a").unwrap();
        let b = table.take("b").unwrap();
        let file = Path::new("t.cfg");
        assert_eq!(a.list(file, "a list").unwrap()[0].text, "x");
        assert_eq!(
            a.string(file, "a word").unwrap_err().to_string(),
            "t.cfg:1: key `a`: expected a word, found a list"
        );
        assert_eq!(b.integer(file, "a count").unwrap(), 5);
        assert_eq!(
            b.integer_in(file, "a count", 6..=7, " things")
                .unwrap_err()
                .to_string(),
            "t.cfg:2: key `b`: 5 is out of range: allowed are 6 to 7 things"
        );
        assert_eq!(
            b.list(file, "a list").unwrap_err().to_string(),
            "t.cfg:2: key `b`: expected a list, found 5"
        );
    }
}
