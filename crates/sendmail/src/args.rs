//! The command line programs give sendmail (the subset they use): `-t`,
//! `-f ADDR`/`-fADDR`, `-F NAME`, `-i`/`-oi`, `-bm`, `-q` (send what
//! waits in the outbox), recipients as arguments. Other `-o` options are
//! accepted and ignored, as sendmail's own mean nothing here.

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    /// `-t`: recipients from To:, Cc: and Bcc: (Bcc: is then removed).
    pub recipients_from_headers: bool,
    pub sender: Option<String>,
    pub full_name: Option<String>,
    /// `-i`/`-oi`: a line with a single dot does not end the message.
    pub ignore_dots: bool,
    /// `-q`: only send what waits in the outbox.
    pub flush_only: bool,
    pub recipients: Vec<String>,
    /// `--config FILE` (also `PORTCULLIS_SENDMAIL_CONFIG`).
    pub config: Option<String>,
    /// `--help`: print [`USAGE`] and send nothing (not `-h`: that is
    /// sendmail's hop count).
    pub help: bool,
}

/// What `--help` prints.
pub const USAGE: &str = "\
Usage: portcullis sendmail [OPTIONS] [RECIPIENT...] < MESSAGE
       (or as `sendmail`, through a link)

Submit the message on stdin to the submission server of the sender's
domain (RFC 6186 SRV records, then its autoconfig file, then `server` from
the config), over verified TLS with AUTH; 465 first, then 587.

Options (sendmail's):
  -t              take recipients from To:, Cc: and Bcc: (Bcc: is removed)
  -i, -oi         a line with a single dot does not end the message
  -f ADDR, -r ADDR  the envelope sender (default: `sender` in the config)
  -F NAME         the sender's full name, for a From: header that is added
  -q              only send what waits in the outbox
  -bm, -o...      accepted and ignored
  --config FILE   the client config (default: PORTCULLIS_SENDMAIL_CONFIG,
                  then /etc/portcullis/sendmail.toml)
  --help          print this help

Exit codes: 0 sent (or kept in the outbox), 64 usage, 65 bad message,
67 recipient refused, 69 TLS not available or not trusted, 75 try again
later, 77 credentials refused, 78 config.
";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn parse(args: &[String]) -> Result<Invocation, UsageError> {
    let mut inv = Invocation::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str, inline: &str| -> Result<String, UsageError> {
            if inline.is_empty() {
                it.next()
                    .cloned()
                    .ok_or_else(|| UsageError(format!("{flag} needs a value")))
            } else {
                Ok(inline.to_owned())
            }
        };
        match a.as_str() {
            "--" => {
                inv.recipients.extend(it.by_ref().cloned());
                break;
            }
            "--config" => inv.config = Some(value("--config", "")?),
            "--help" => inv.help = true,
            "-t" => inv.recipients_from_headers = true,
            "-i" | "-oi" => inv.ignore_dots = true,
            "-bm" | "-om" | "-v" => {}
            "-q" => inv.flush_only = true,
            s if s.starts_with("-f") => inv.sender = Some(value("-f", &s[2..])?),
            s if s.starts_with("-r") => inv.sender = Some(value("-r", &s[2..])?),
            s if s.starts_with("-F") => inv.full_name = Some(value("-F", &s[2..])?),
            s if s.starts_with("-o") => {} // -oem, -odi, -oQ...: sendmail's own tuning
            s if s.starts_with("-b") => {
                return Err(UsageError(format!(
                    "{s}: only -bm (deliver a message) is supported"
                )));
            }
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(UsageError(format!("unknown option {s}")));
            }
            s => inv.recipients.push(s.to_owned()),
        }
    }
    // "-f <>" and friends mean the null sender.
    if inv.sender.as_deref() == Some("<>") {
        inv.sender = Some(String::new());
    }
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Invocation {
        parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn help_is_asked_with_dash_dash_help() {
        assert!(p(&["--help"]).help);
        assert!(p(&["-t", "--help"]).help);
        assert!(!p(&["-t"]).help);
    }

    #[test]
    fn reads_the_flags_php_and_cron_use() {
        let i = p(&["-t", "-i"]);
        assert!(i.recipients_from_headers && i.ignore_dots);
        let i = p(&[
            "-oi",
            "-f",
            "cron@host.test",
            "-FCron Daemon",
            "root@host.test",
        ]);
        assert_eq!(i.sender.as_deref(), Some("cron@host.test"));
        assert_eq!(i.full_name.as_deref(), Some("Cron Daemon"));
        assert_eq!(i.recipients, ["root@host.test"]);
        assert_eq!(p(&["-fme@x.test"]).sender.as_deref(), Some("me@x.test"));
        assert_eq!(p(&["-oem", "-odi", "a@b.test"]).recipients, ["a@b.test"]);
    }

    #[test]
    fn refuses_modes_it_does_not_have() {
        assert!(parse(&["-bp".to_string()]).is_err());
        assert!(parse(&["-X".to_string()]).is_err());
        assert!(parse(&["-f".to_string()]).is_err());
    }
}
