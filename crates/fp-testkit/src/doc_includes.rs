//! Guides that show tested files: every code block of such a guide follows a line
//! `<!-- include: <path relative to the guide's folder> -->` and must equal that file, so the code
//! a reader copies is the code the tests run.

use std::path::Path;

use anyhow::Context;

pub const INCLUDE_PREFIX: &str = "<!-- include: ";
pub const INCLUDE_SUFFIX: &str = " -->";

/// A guide with each included block as its file is now.
#[derive(Debug, Default)]
pub struct IncludedGuide {
    pub text: String,
    /// The included paths, relative to the guide's folder, in the guide's order.
    pub files: Vec<String>,
    /// Files whose block in the guide differs from them.
    pub stale: Vec<String>,
}

/// Replaces the content of every code block of `guide` by the file its include line names,
/// relative to `folder`; a code block without an include line is an error.
pub fn include_files(guide: &str, folder: &Path) -> anyhow::Result<IncludedGuide> {
    let mut included = IncludedGuide::default();
    let mut lines = guide.split_inclusive('\n').enumerate();
    let mut marker: Option<&str> = None;
    while let Some((index, line)) = lines.next() {
        included.text.push_str(line);
        if !line.starts_with("```") {
            marker = line
                .trim_end()
                .strip_prefix(INCLUDE_PREFIX)
                .and_then(|rest| rest.strip_suffix(INCLUDE_SUFFIX));
            continue;
        }
        let file = marker.take().with_context(|| {
            format!(
                "line {}: a code block that includes no file; put the code into a tested file \
                 and write `{INCLUDE_PREFIX}<path>{INCLUDE_SUFFIX}` before it",
                index + 1
            )
        })?;
        let content = std::fs::read_to_string(folder.join(file))
            .with_context(|| format!("line {}: cannot read {file}", index + 1))?;
        anyhow::ensure!(content.ends_with('\n'), "{file} must end with a newline");
        let mut block = String::new();
        let closing = loop {
            let (_, line) = lines
                .next()
                .with_context(|| format!("the block of {file} is never closed"))?;
            if line.trim_end() == "```" {
                break line;
            }
            block.push_str(line);
        };
        if block != content {
            included.stale.push(file.to_owned());
        }
        included.text.push_str(&content);
        included.text.push_str(closing);
        included.files.push(file.to_owned());
    }
    Ok(included)
}

/// Checks that the guide at `guide_path` shows its included files as they are; with the
/// environment variable `update_variable` set, rewrites the guide from the files instead.
pub fn check_or_update(guide_path: &Path, update_variable: &str) -> anyhow::Result<IncludedGuide> {
    let guide = std::fs::read_to_string(guide_path)?;
    let folder = guide_path.parent().context("a guide in no folder")?;
    let included = include_files(&guide, folder)?;
    if std::env::var_os(update_variable).is_some() {
        std::fs::write(guide_path, &included.text)?;
    } else {
        anyhow::ensure!(
            included.stale.is_empty(),
            "the blocks of {:?} in {} differ from the files; edit the files, then run this \
             test with {update_variable}=1 to copy them into the guide",
            included.stale,
            guide_path.display()
        );
    }
    Ok(included)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_compared_with_their_files_and_code_without_a_file_is_refused() {
        let folder = std::env::temp_dir().join(format!("doc-includes-{}", std::process::id()));
        std::fs::create_dir_all(&folder).expect("folder");
        std::fs::write(folder.join("a.py"), "print('a')\n").expect("file");
        let guide = "Intro\n<!-- include: a.py -->\n```python\nprint('old')\n```\n";
        let included = include_files(guide, &folder).expect("includes");
        assert_eq!(included.files, ["a.py"]);
        assert_eq!(included.stale, ["a.py"]);
        assert_eq!(
            included.text,
            "Intro\n<!-- include: a.py -->\n```python\nprint('a')\n```\n"
        );
        assert!(
            include_files(&included.text, &folder)
                .expect("includes")
                .stale
                .is_empty()
        );
        assert!(include_files("```sh\nls\n```\n", &folder).is_err());
        std::fs::remove_dir_all(&folder).expect("cleanup");
    }
}
