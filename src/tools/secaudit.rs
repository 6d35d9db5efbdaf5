//! `secaudit`: a security audit in steps; an expert model assesses the findings and code at
//! the end.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workflow::{
    Actions, Certainty, Steps, Workflow, choice_section, list_section, text_section,
};

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
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
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
    type Confidence = Certainty;
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

    fn brief(steps: &Steps<Self>) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(text_section(
            "## Scope",
            steps.latest(|e| e.security_scope.as_deref()),
        ));
        out.extend(choice_section(
            "## Threat level",
            steps.latest(|e| e.threat_level.as_ref()),
        ));
        out.extend(list_section(
            "## Compliance requirements",
            steps.latest_list(|e| &e.compliance_requirements),
        ));
        out.extend(choice_section(
            "## Audit focus",
            steps.latest(|e| e.audit_focus.as_ref()),
        ));
        out.extend(text_section(
            "## Report severities from",
            steps.latest(|e| e.severity_filter.as_deref()),
        ));
        out
    }
}
