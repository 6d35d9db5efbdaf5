//! `secaudit`: a security audit in steps; an expert model assesses the findings and code at
//! the end.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workflow::{Actions, Steps, Workflow, text_section};

pub struct SecAudit;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum ThreatLevel {
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum AuditFocus {
    Owasp,
    Compliance,
    Infrastructure,
    Dependencies,
    Comprehensive,
}

/// `secaudit`'s own fields.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Extra {
    /// What the system is and what is in scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    security_scope: Option<String>,
    /// How exposed the system is (default medium).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threat_level: Option<ThreatLevel>,
    /// e.g. SOC2, PCI DSS, HIPAA, GDPR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    compliance_requirements: Vec<String>,
    /// Where to look (default comprehensive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audit_focus: Option<AuditFocus>,
    /// Lowest severity to report: critical, high, medium, low or all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    severity_filter: Option<String>,
}

impl Workflow for SecAudit {
    type Extra = Extra;
    const NAME: &'static str = "secaudit";
    const DESCRIPTION: &'static str = "Audit code for security in steps (OWASP categories, secrets, auth, input \
         handling, dependencies); at the last step an expert model assesses it all.";
    const PROMPT: &'static str = include_str!("prompts/secaudit.txt");
    const PAUSE: &'static str = "pause_for_security_audit";
    const COMPLETE: &'static str = "security_analysis_complete";
    const ACTIONS: Actions = Actions {
        first: &[
            "Identify what the system exposes: entry points, users, data it holds",
            "Find authentication, authorization and session handling code",
            "List where untrusted input enters",
        ],
        middle: &[
            "Follow untrusted input to queries, commands, files and templates",
            "Check secrets handling, crypto use and error messages that leak",
            "Review dependencies and configuration defaults",
        ],
        closing: &[
            "Confirm each finding with the exact code path; rate its severity",
            "Make sure relevant_files holds the security-critical files",
            "Finish with next_step_required false for the expert assessment",
        ],
    };

    fn brief(steps: &Steps) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(text_section(steps, "security_scope", "## Scope"));
        out.extend(text_section(steps, "threat_level", "## Threat level"));
        out.extend(text_section(
            steps,
            "compliance_requirements",
            "## Compliance requirements",
        ));
        out.extend(text_section(steps, "audit_focus", "## Audit focus"));
        out.extend(text_section(
            steps,
            "severity_filter",
            "## Report severities from",
        ));
        out
    }
}
