//! Hang-up causes: why a call ended, in every form switches write it, read into one
//! Q.850 code. The tables here are the whole of what tollbook understands:
//!
//! - the Q.850 causes 0 to 127 (0, "unspecified", is not in Q.850 but switches write it
//!   when no cause applies; numbers Q.850 leaves unassigned are listed as such);
//! - every FreeSWITCH cause name (`switch_call_cause_t`, include/switch_types.h, and the
//!   "Hangup Cause Code Table" of the FreeSWITCH documentation), those above 127 read as
//!   FreeSWITCH's own `hangup_cause_q850` gives them (`switch_channel_cause_q850`: 16);
//! - Asterisk's CDR dispositions (ANSWERED, NO ANSWER, BUSY, FAILED, CONGESTION);
//! - SIP final responses, mapped after RFC 3398 §7.2.4.1.
//!
//! A cause that none of them knows is not a reason to refuse a call: it is kept as the
//! switch wrote it, read as 0, and flagged ([`CauseFlag::Unrecognised`]); a missing cause
//! is read as 16 and flagged ([`CauseFlag::Missing`]). Billing goes by the billable
//! seconds either way.

use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// The longest hang-up cause text kept: the longest FreeSWITCH name is 30 characters; a
/// longer text is not a cause but a broken column.
pub const HANGUP_CAUSE_TEXT_LEN_MAX: usize = 64;

/// What was unusual about a CDR's hang-up cause. The call is billed all the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseFlag {
    /// The switch gave no cause; read as 16 (normal clearing).
    Missing,
    /// No table knows the cause the switch gave; kept as written and read as 0.
    Unrecognised,
}

impl CauseFlag {
    pub fn as_str(&self) -> &'static str {
        match self {
            CauseFlag::Missing => "missing",
            CauseFlag::Unrecognised => "unrecognised",
        }
    }
}

/// A hang-up cause as read from a CDR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HangupCause {
    /// The Q.850 code it reads as.
    pub code: u16,
    /// The text the switch wrote, when it was not a bare Q.850 number (a name, a SIP
    /// status, an Asterisk disposition, or something no table knows).
    pub raw: Option<String>,
    pub flag: Option<CauseFlag>,
}

/// One Q.850 cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Q850Cause {
    pub code: u16,
    /// tollbook's name for it, as CDRs show it.
    pub name: &'static str,
    pub description: &'static str,
    /// FreeSWITCH's name for it, where FreeSWITCH has one.
    pub freeswitch: Option<&'static str>,
}

/// One FreeSWITCH cause that is not a Q.850 number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SwitchCause {
    pub name: &'static str,
    /// Its number in `switch_call_cause_t`.
    pub number: u16,
    /// The Q.850 code it is read as.
    pub q850: u16,
}

/// One Asterisk CDR disposition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Disposition {
    pub name: &'static str,
    pub q850: u16,
}

/// One SIP final response with a Q.850 mapping of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SipMapping {
    pub status: u16,
    pub q850: u16,
}

/// Every code from 0 to 127, in order: `Q850[code].code == code`.
#[rustfmt::skip]
pub const Q850: [Q850Cause; 128] = [
    Q850Cause { code: 0, name: "unspecified", description: "No cause recorded (not a Q.850 cause; switches write 0 when none applies)", freeswitch: Some("NONE") },
    Q850Cause { code: 1, name: "unallocated_number", description: "Unallocated (unassigned) number", freeswitch: Some("UNALLOCATED_NUMBER") },
    Q850Cause { code: 2, name: "no_route_transit_net", description: "No route to specified transit network", freeswitch: Some("NO_ROUTE_TRANSIT_NET") },
    Q850Cause { code: 3, name: "no_route_destination", description: "No route to destination", freeswitch: Some("NO_ROUTE_DESTINATION") },
    Q850Cause { code: 4, name: "send_special_information_tone", description: "Send special information tone", freeswitch: None },
    Q850Cause { code: 5, name: "misdialled_trunk_prefix", description: "Misdialled trunk prefix", freeswitch: None },
    Q850Cause { code: 6, name: "channel_unacceptable", description: "Channel unacceptable", freeswitch: Some("CHANNEL_UNACCEPTABLE") },
    Q850Cause { code: 7, name: "call_awarded_delivered", description: "Call awarded and being delivered in an established channel", freeswitch: Some("CALL_AWARDED_DELIVERED") },
    Q850Cause { code: 8, name: "preemption", description: "Preemption", freeswitch: None },
    Q850Cause { code: 9, name: "preemption_circuit_reserved", description: "Preemption, circuit reserved for reuse", freeswitch: None },
    Q850Cause { code: 10, name: "unassigned_10", description: "Not assigned by Q.850 (normal event class; read as cause 31)", freeswitch: None },
    Q850Cause { code: 11, name: "unassigned_11", description: "Not assigned by Q.850 (normal event class; read as cause 31)", freeswitch: None },
    Q850Cause { code: 12, name: "unassigned_12", description: "Not assigned by Q.850 (normal event class; read as cause 31)", freeswitch: None },
    Q850Cause { code: 13, name: "unassigned_13", description: "Not assigned by Q.850 (normal event class; read as cause 31)", freeswitch: None },
    Q850Cause { code: 14, name: "number_ported", description: "QoR: ported number", freeswitch: None },
    Q850Cause { code: 15, name: "unassigned_15", description: "Not assigned by Q.850 (normal event class; read as cause 31)", freeswitch: None },
    Q850Cause { code: 16, name: "normal_clearing", description: "Normal call clearing", freeswitch: Some("NORMAL_CLEARING") },
    Q850Cause { code: 17, name: "user_busy", description: "User busy", freeswitch: Some("USER_BUSY") },
    Q850Cause { code: 18, name: "no_user_response", description: "No user responding", freeswitch: Some("NO_USER_RESPONSE") },
    Q850Cause { code: 19, name: "no_answer", description: "No answer from user (user alerted)", freeswitch: Some("NO_ANSWER") },
    Q850Cause { code: 20, name: "subscriber_absent", description: "Subscriber absent", freeswitch: Some("SUBSCRIBER_ABSENT") },
    Q850Cause { code: 21, name: "call_rejected", description: "Call rejected", freeswitch: Some("CALL_REJECTED") },
    Q850Cause { code: 22, name: "number_changed", description: "Number changed", freeswitch: Some("NUMBER_CHANGED") },
    Q850Cause { code: 23, name: "redirection_to_new_destination", description: "Redirection to new destination", freeswitch: Some("REDIRECTION_TO_NEW_DESTINATION") },
    Q850Cause { code: 24, name: "unassigned_24", description: "Not assigned by Q.850 (normal event class; read as cause 31)", freeswitch: None },
    Q850Cause { code: 25, name: "exchange_routing_error", description: "Exchange routing error", freeswitch: Some("EXCHANGE_ROUTING_ERROR") },
    Q850Cause { code: 26, name: "non_selected_user_clearing", description: "Non-selected user clearing", freeswitch: None },
    Q850Cause { code: 27, name: "destination_out_of_order", description: "Destination out of order", freeswitch: Some("DESTINATION_OUT_OF_ORDER") },
    Q850Cause { code: 28, name: "invalid_number_format", description: "Invalid number format (address incomplete)", freeswitch: Some("INVALID_NUMBER_FORMAT") },
    Q850Cause { code: 29, name: "facility_rejected", description: "Facility rejected", freeswitch: Some("FACILITY_REJECTED") },
    Q850Cause { code: 30, name: "response_to_status_enquiry", description: "Response to STATUS ENQUIRY", freeswitch: Some("RESPONSE_TO_STATUS_ENQUIRY") },
    Q850Cause { code: 31, name: "normal_unspecified", description: "Normal, unspecified", freeswitch: Some("NORMAL_UNSPECIFIED") },
    Q850Cause { code: 32, name: "unassigned_32", description: "Not assigned by Q.850 (resource unavailable class; read as cause 47)", freeswitch: None },
    Q850Cause { code: 33, name: "unassigned_33", description: "Not assigned by Q.850 (resource unavailable class; read as cause 47)", freeswitch: None },
    Q850Cause { code: 34, name: "no_circuit_available", description: "No circuit/channel available", freeswitch: Some("NORMAL_CIRCUIT_CONGESTION") },
    Q850Cause { code: 35, name: "unassigned_35", description: "Not assigned by Q.850 (resource unavailable class; read as cause 47)", freeswitch: None },
    Q850Cause { code: 36, name: "unassigned_36", description: "Not assigned by Q.850 (resource unavailable class; read as cause 47)", freeswitch: None },
    Q850Cause { code: 37, name: "unassigned_37", description: "Not assigned by Q.850 (resource unavailable class; read as cause 47)", freeswitch: None },
    Q850Cause { code: 38, name: "network_out_of_order", description: "Network out of order", freeswitch: Some("NETWORK_OUT_OF_ORDER") },
    Q850Cause { code: 39, name: "frame_mode_out_of_service", description: "Permanent frame mode connection out of service", freeswitch: None },
    Q850Cause { code: 40, name: "frame_mode_operational", description: "Permanent frame mode connection operational", freeswitch: None },
    Q850Cause { code: 41, name: "temporary_failure", description: "Temporary failure", freeswitch: Some("NORMAL_TEMPORARY_FAILURE") },
    Q850Cause { code: 42, name: "switching_equipment_congestion", description: "Switching equipment congestion", freeswitch: Some("SWITCH_CONGESTION") },
    Q850Cause { code: 43, name: "access_information_discarded", description: "Access information discarded", freeswitch: Some("ACCESS_INFO_DISCARDED") },
    Q850Cause { code: 44, name: "requested_channel_unavailable", description: "Requested circuit/channel not available", freeswitch: Some("REQUESTED_CHAN_UNAVAIL") },
    Q850Cause { code: 45, name: "pre_empted", description: "Pre-empted (FreeSWITCH's cause 45)", freeswitch: Some("PRE_EMPTED") },
    Q850Cause { code: 46, name: "precedence_call_blocked", description: "Precedence call blocked", freeswitch: None },
    Q850Cause { code: 47, name: "resource_unavailable", description: "Resource unavailable, unspecified", freeswitch: None },
    Q850Cause { code: 48, name: "unassigned_48", description: "Not assigned by Q.850 (service or option not available class; read as cause 63)", freeswitch: None },
    Q850Cause { code: 49, name: "quality_of_service_unavailable", description: "Quality of service not available", freeswitch: None },
    Q850Cause { code: 50, name: "facility_not_subscribed", description: "Requested facility not subscribed", freeswitch: Some("FACILITY_NOT_SUBSCRIBED") },
    Q850Cause { code: 51, name: "unassigned_51", description: "Not assigned by Q.850 (service or option not available class; read as cause 63)", freeswitch: None },
    Q850Cause { code: 52, name: "outgoing_call_barred", description: "Outgoing calls barred", freeswitch: Some("OUTGOING_CALL_BARRED") },
    Q850Cause { code: 53, name: "outgoing_call_barred_within_cug", description: "Outgoing calls barred within CUG", freeswitch: None },
    Q850Cause { code: 54, name: "incoming_call_barred", description: "Incoming calls barred", freeswitch: Some("INCOMING_CALL_BARRED") },
    Q850Cause { code: 55, name: "incoming_call_barred_within_cug", description: "Incoming calls barred within CUG", freeswitch: None },
    Q850Cause { code: 56, name: "unassigned_56", description: "Not assigned by Q.850 (service or option not available class; read as cause 63)", freeswitch: None },
    Q850Cause { code: 57, name: "bearer_capability_not_authorized", description: "Bearer capability not authorized", freeswitch: Some("BEARERCAPABILITY_NOTAUTH") },
    Q850Cause { code: 58, name: "bearer_capability_not_available", description: "Bearer capability not presently available", freeswitch: Some("BEARERCAPABILITY_NOTAVAIL") },
    Q850Cause { code: 59, name: "unassigned_59", description: "Not assigned by Q.850 (service or option not available class; read as cause 63)", freeswitch: None },
    Q850Cause { code: 60, name: "unassigned_60", description: "Not assigned by Q.850 (service or option not available class; read as cause 63)", freeswitch: None },
    Q850Cause { code: 61, name: "unassigned_61", description: "Not assigned by Q.850 (service or option not available class; read as cause 63)", freeswitch: None },
    Q850Cause { code: 62, name: "inconsistent_outgoing_access", description: "Inconsistency in designated outgoing access information and subscriber class", freeswitch: None },
    Q850Cause { code: 63, name: "service_unavailable", description: "Service or option not available, unspecified", freeswitch: Some("SERVICE_UNAVAILABLE") },
    Q850Cause { code: 64, name: "unassigned_64", description: "Not assigned by Q.850 (service or option not implemented class; read as cause 79)", freeswitch: None },
    Q850Cause { code: 65, name: "bearer_capability_not_implemented", description: "Bearer capability not implemented", freeswitch: Some("BEARERCAPABILITY_NOTIMPL") },
    Q850Cause { code: 66, name: "channel_type_not_implemented", description: "Channel type not implemented", freeswitch: Some("CHAN_NOT_IMPLEMENTED") },
    Q850Cause { code: 67, name: "unassigned_67", description: "Not assigned by Q.850 (service or option not implemented class; read as cause 79)", freeswitch: None },
    Q850Cause { code: 68, name: "unassigned_68", description: "Not assigned by Q.850 (service or option not implemented class; read as cause 79)", freeswitch: None },
    Q850Cause { code: 69, name: "facility_not_implemented", description: "Requested facility not implemented", freeswitch: Some("FACILITY_NOT_IMPLEMENTED") },
    Q850Cause { code: 70, name: "restricted_digital_only", description: "Only restricted digital information bearer capability is available", freeswitch: None },
    Q850Cause { code: 71, name: "unassigned_71", description: "Not assigned by Q.850 (service or option not implemented class; read as cause 79)", freeswitch: None },
    Q850Cause { code: 72, name: "unassigned_72", description: "Not assigned by Q.850 (service or option not implemented class; read as cause 79)", freeswitch: None },
    Q850Cause { code: 73, name: "unassigned_73", description: "Not assigned by Q.850 (service or option not implemented class; read as cause 79)", freeswitch: None },
    Q850Cause { code: 74, name: "unassigned_74", description: "Not assigned by Q.850 (service or option not implemented class; read as cause 79)", freeswitch: None },
    Q850Cause { code: 75, name: "unassigned_75", description: "Not assigned by Q.850 (service or option not implemented class; read as cause 79)", freeswitch: None },
    Q850Cause { code: 76, name: "unassigned_76", description: "Not assigned by Q.850 (service or option not implemented class; read as cause 79)", freeswitch: None },
    Q850Cause { code: 77, name: "unassigned_77", description: "Not assigned by Q.850 (service or option not implemented class; read as cause 79)", freeswitch: None },
    Q850Cause { code: 78, name: "unassigned_78", description: "Not assigned by Q.850 (service or option not implemented class; read as cause 79)", freeswitch: None },
    Q850Cause { code: 79, name: "service_not_implemented", description: "Service or option not implemented, unspecified", freeswitch: Some("SERVICE_NOT_IMPLEMENTED") },
    Q850Cause { code: 80, name: "unassigned_80", description: "Not assigned by Q.850 (invalid message class; read as cause 95)", freeswitch: None },
    Q850Cause { code: 81, name: "invalid_call_reference", description: "Invalid call reference value", freeswitch: Some("INVALID_CALL_REFERENCE") },
    Q850Cause { code: 82, name: "channel_does_not_exist", description: "Identified channel does not exist", freeswitch: None },
    Q850Cause { code: 83, name: "suspended_call_identity_unknown", description: "A suspended call exists, but this call identity does not", freeswitch: None },
    Q850Cause { code: 84, name: "call_identity_in_use", description: "Call identity in use", freeswitch: None },
    Q850Cause { code: 85, name: "no_call_suspended", description: "No call suspended", freeswitch: None },
    Q850Cause { code: 86, name: "call_identity_cleared", description: "Call having the requested call identity has been cleared", freeswitch: None },
    Q850Cause { code: 87, name: "user_not_member_of_cug", description: "User not member of CUG", freeswitch: None },
    Q850Cause { code: 88, name: "incompatible_destination", description: "Incompatible destination", freeswitch: Some("INCOMPATIBLE_DESTINATION") },
    Q850Cause { code: 89, name: "unassigned_89", description: "Not assigned by Q.850 (invalid message class; read as cause 95)", freeswitch: None },
    Q850Cause { code: 90, name: "non_existent_cug", description: "Non-existent CUG", freeswitch: None },
    Q850Cause { code: 91, name: "invalid_transit_network", description: "Invalid transit network selection", freeswitch: None },
    Q850Cause { code: 92, name: "unassigned_92", description: "Not assigned by Q.850 (invalid message class; read as cause 95)", freeswitch: None },
    Q850Cause { code: 93, name: "unassigned_93", description: "Not assigned by Q.850 (invalid message class; read as cause 95)", freeswitch: None },
    Q850Cause { code: 94, name: "unassigned_94", description: "Not assigned by Q.850 (invalid message class; read as cause 95)", freeswitch: None },
    Q850Cause { code: 95, name: "invalid_message", description: "Invalid message, unspecified", freeswitch: Some("INVALID_MSG_UNSPECIFIED") },
    Q850Cause { code: 96, name: "mandatory_ie_missing", description: "Mandatory information element is missing", freeswitch: Some("MANDATORY_IE_MISSING") },
    Q850Cause { code: 97, name: "message_type_nonexistent", description: "Message type non-existent or not implemented", freeswitch: Some("MESSAGE_TYPE_NONEXIST") },
    Q850Cause { code: 98, name: "wrong_message", description: "Message not compatible with call state or message type non-existent or not implemented", freeswitch: Some("WRONG_MESSAGE") },
    Q850Cause { code: 99, name: "ie_nonexistent", description: "Information element/parameter non-existent or not implemented", freeswitch: Some("IE_NONEXIST") },
    Q850Cause { code: 100, name: "invalid_ie_contents", description: "Invalid information element contents", freeswitch: Some("INVALID_IE_CONTENTS") },
    Q850Cause { code: 101, name: "wrong_call_state", description: "Message not compatible with call state", freeswitch: Some("WRONG_CALL_STATE") },
    Q850Cause { code: 102, name: "recovery_on_timer_expiry", description: "Recovery on timer expiry", freeswitch: Some("RECOVERY_ON_TIMER_EXPIRE") },
    Q850Cause { code: 103, name: "parameter_nonexistent_passed_on", description: "Parameter non-existent or not implemented, passed on", freeswitch: Some("MANDATORY_IE_LENGTH_ERROR") },
    Q850Cause { code: 104, name: "unassigned_104", description: "Not assigned by Q.850 (protocol error class; read as cause 111)", freeswitch: None },
    Q850Cause { code: 105, name: "unassigned_105", description: "Not assigned by Q.850 (protocol error class; read as cause 111)", freeswitch: None },
    Q850Cause { code: 106, name: "unassigned_106", description: "Not assigned by Q.850 (protocol error class; read as cause 111)", freeswitch: None },
    Q850Cause { code: 107, name: "unassigned_107", description: "Not assigned by Q.850 (protocol error class; read as cause 111)", freeswitch: None },
    Q850Cause { code: 108, name: "unassigned_108", description: "Not assigned by Q.850 (protocol error class; read as cause 111)", freeswitch: None },
    Q850Cause { code: 109, name: "unassigned_109", description: "Not assigned by Q.850 (protocol error class; read as cause 111)", freeswitch: None },
    Q850Cause { code: 110, name: "unrecognized_parameter_discarded", description: "Message with unrecognized parameter, discarded", freeswitch: None },
    Q850Cause { code: 111, name: "protocol_error", description: "Protocol error, unspecified", freeswitch: Some("PROTOCOL_ERROR") },
    Q850Cause { code: 112, name: "unassigned_112", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 113, name: "unassigned_113", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 114, name: "unassigned_114", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 115, name: "unassigned_115", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 116, name: "unassigned_116", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 117, name: "unassigned_117", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 118, name: "unassigned_118", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 119, name: "unassigned_119", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 120, name: "unassigned_120", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 121, name: "unassigned_121", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 122, name: "unassigned_122", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 123, name: "unassigned_123", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 124, name: "unassigned_124", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 125, name: "unassigned_125", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 126, name: "unassigned_126", description: "Not assigned by Q.850 (interworking class; read as cause 127)", freeswitch: None },
    Q850Cause { code: 127, name: "interworking", description: "Interworking, unspecified", freeswitch: Some("INTERWORKING") },
];

/// FreeSWITCH's causes above 127 (switch_types.h, FreeSWITCH 1.10). FreeSWITCH writes
/// `hangup_cause_q850` = 16 for all of them (`switch_channel_cause_q850`), and so does
/// tollbook; the name is kept on the CDR. `SUCCESS` (142) ends a call that went well.
pub const FREESWITCH_EXTRA: [SwitchCause; 33] = [
    SwitchCause { name: "SUCCESS", number: 142, q850: 16 },
    SwitchCause { name: "ORIGINATOR_CANCEL", number: 487, q850: 16 },
    SwitchCause { name: "CRASH", number: 700, q850: 16 },
    SwitchCause { name: "SYSTEM_SHUTDOWN", number: 701, q850: 16 },
    SwitchCause { name: "LOSE_RACE", number: 702, q850: 16 },
    SwitchCause { name: "MANAGER_REQUEST", number: 703, q850: 16 },
    SwitchCause { name: "BLIND_TRANSFER", number: 800, q850: 16 },
    SwitchCause { name: "ATTENDED_TRANSFER", number: 801, q850: 16 },
    SwitchCause { name: "ALLOTTED_TIMEOUT", number: 802, q850: 16 },
    SwitchCause { name: "USER_CHALLENGE", number: 803, q850: 16 },
    SwitchCause { name: "MEDIA_TIMEOUT", number: 804, q850: 16 },
    SwitchCause { name: "PICKED_OFF", number: 805, q850: 16 },
    SwitchCause { name: "USER_NOT_REGISTERED", number: 806, q850: 16 },
    SwitchCause { name: "PROGRESS_TIMEOUT", number: 807, q850: 16 },
    SwitchCause { name: "INVALID_GATEWAY", number: 808, q850: 16 },
    SwitchCause { name: "GATEWAY_DOWN", number: 809, q850: 16 },
    SwitchCause { name: "INVALID_URL", number: 810, q850: 16 },
    SwitchCause { name: "INVALID_PROFILE", number: 811, q850: 16 },
    SwitchCause { name: "NO_PICKUP", number: 812, q850: 16 },
    SwitchCause { name: "SRTP_READ_ERROR", number: 813, q850: 16 },
    SwitchCause { name: "BOWOUT", number: 814, q850: 16 },
    SwitchCause { name: "BUSY_EVERYWHERE", number: 815, q850: 16 },
    SwitchCause { name: "DECLINE", number: 816, q850: 16 },
    SwitchCause { name: "DOES_NOT_EXIST_ANYWHERE", number: 817, q850: 16 },
    SwitchCause { name: "NOT_ACCEPTABLE", number: 818, q850: 16 },
    SwitchCause { name: "UNWANTED", number: 819, q850: 16 },
    SwitchCause { name: "NO_IDENTITY", number: 820, q850: 16 },
    SwitchCause { name: "BAD_IDENTITY_INFO", number: 821, q850: 16 },
    SwitchCause { name: "UNSUPPORTED_CERTIFICATE", number: 822, q850: 16 },
    SwitchCause { name: "INVALID_IDENTITY", number: 823, q850: 16 },
    SwitchCause { name: "STALE_DATE", number: 824, q850: 16 },
    SwitchCause { name: "REJECT_ALL", number: 825, q850: 16 },
    // The documentation's table calls cause 0 UNSPECIFIED; the code calls it NONE.
    SwitchCause { name: "UNSPECIFIED", number: 0, q850: 0 },
];

/// Asterisk's dispositions (cdr.c), each read as the cause Asterisk derives it from:
/// BUSY from 17, NO ANSWER from 19 (or 16 before an answer), CONGESTION from 34. FAILED
/// stands for several (no route, unregistered, congestion with `congestion=no`):
/// tollbook reads it as 41, temporary failure, and keeps the word.
pub const ASTERISK_DISPOSITIONS: [Disposition; 5] = [
    Disposition { name: "ANSWERED", q850: 16 },
    Disposition { name: "NO ANSWER", q850: 19 },
    Disposition { name: "BUSY", q850: 17 },
    Disposition { name: "FAILED", q850: 41 },
    Disposition { name: "CONGESTION", q850: 34 },
];

/// SIP final responses mapped to Q.850 (RFC 3398 §7.2.4.1). Where the RFC gives no cause
/// (487, 488, 606: "by Warning header" or none), the values gateways commonly use are
/// taken; 423 and 421 follow 420. A 2xx is an answered call cleared normally (16); any
/// other status from 300 to 699 is 31, normal unspecified.
pub const SIP_MAPPINGS: [SipMapping; 37] = [
    SipMapping { status: 400, q850: 41 },
    SipMapping { status: 401, q850: 21 },
    SipMapping { status: 402, q850: 21 },
    SipMapping { status: 403, q850: 21 },
    SipMapping { status: 404, q850: 1 },
    SipMapping { status: 405, q850: 63 },
    SipMapping { status: 406, q850: 79 },
    SipMapping { status: 407, q850: 21 },
    SipMapping { status: 408, q850: 102 },
    SipMapping { status: 410, q850: 22 },
    SipMapping { status: 413, q850: 127 },
    SipMapping { status: 414, q850: 127 },
    SipMapping { status: 415, q850: 79 },
    SipMapping { status: 416, q850: 127 },
    SipMapping { status: 420, q850: 127 },
    SipMapping { status: 421, q850: 127 },
    SipMapping { status: 423, q850: 127 },
    SipMapping { status: 480, q850: 18 },
    SipMapping { status: 481, q850: 41 },
    SipMapping { status: 482, q850: 25 },
    SipMapping { status: 483, q850: 25 },
    SipMapping { status: 484, q850: 28 },
    SipMapping { status: 485, q850: 1 },
    SipMapping { status: 486, q850: 17 },
    SipMapping { status: 487, q850: 127 },
    SipMapping { status: 488, q850: 127 },
    SipMapping { status: 500, q850: 41 },
    SipMapping { status: 501, q850: 79 },
    SipMapping { status: 502, q850: 38 },
    SipMapping { status: 503, q850: 41 },
    SipMapping { status: 504, q850: 102 },
    SipMapping { status: 505, q850: 127 },
    SipMapping { status: 513, q850: 127 },
    SipMapping { status: 600, q850: 17 },
    SipMapping { status: 603, q850: 21 },
    SipMapping { status: 604, q850: 1 },
    SipMapping { status: 606, q850: 58 },
];

/// The Q.850 cause `code`, if it is one (0 to 127).
pub fn q850(code: u16) -> Option<&'static Q850Cause> {
    Q850.get(usize::from(code))
}

/// The Q.850 cause for a SIP final response: see [`SIP_MAPPINGS`].
pub fn sip_to_q850(status: u16) -> u16 {
    match SIP_MAPPINGS.iter().find(|m| m.status == status) {
        Some(mapping) => mapping.q850,
        None if (200..=299).contains(&status) => 16,
        None => 31,
    }
}

/// A cause name in one spelling: upper case, spaces and dashes as underscores
/// (`no answer`, `NO-ANSWER` and `NO_ANSWER` are one name).
fn normalised(text: &str) -> String {
    text.chars().map(|c| if c == ' ' || c == '-' { '_' } else { c.to_ascii_uppercase() }).collect()
}

/// The Q.850 code of a cause name from any table: tollbook's names, FreeSWITCH's and
/// Asterisk's dispositions, in any case.
pub fn code_of_name(text: &str) -> Option<u16> {
    let name = normalised(text.trim());
    Q850.iter()
        .find(|c| c.name.eq_ignore_ascii_case(&name) || c.freeswitch == Some(name.as_str()))
        .map(|c| c.code)
        .or_else(|| FREESWITCH_EXTRA.iter().find(|c| c.name == name).map(|c| c.q850))
        .or_else(|| ASTERISK_DISPOSITIONS.iter().find(|d| normalised(d.name) == name).map(|d| d.q850))
}

/// The Q.850 code of a cause in any form tollbook knows, or `None`: a number from 0 to
/// 127, a SIP status (`sip:486`, `SIP 486`, from 200 to 699), or a name
/// ([`code_of_name`]).
pub fn known_code(text: &str) -> Option<u16> {
    let text = text.trim();
    if let Some(rest) = text.get(..3).filter(|head| head.eq_ignore_ascii_case("sip")).map(|_| &text[3..]) {
        let number = rest.strip_prefix([':', ' ', '/', '_', '-']).unwrap_or(rest).trim();
        return number.parse::<u16>().ok().filter(|s| (200..=699).contains(s)).map(sip_to_q850);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u16>().ok().filter(|c| *c <= 127);
    }
    code_of_name(text)
}

/// Reads a CDR's hang-up cause. Only a text that cannot be a cause at all (too long, with
/// control characters) is refused; anything else is read, flagged when it is missing or
/// unknown, so that an answered call is always billed.
pub fn read_cause(text: Option<&str>) -> Result<HangupCause, DomainError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(HangupCause { code: 16, raw: None, flag: Some(CauseFlag::Missing) });
    };
    if text.chars().count() > HANGUP_CAUSE_TEXT_LEN_MAX {
        return Err(DomainError::InvalidField {
            field: "hangup_cause",
            reason: format!("longer than {HANGUP_CAUSE_TEXT_LEN_MAX} characters"),
        });
    }
    if text.chars().any(char::is_control) {
        return Err(DomainError::InvalidField { field: "hangup_cause", reason: "has control characters".into() });
    }
    let bare_number = text.bytes().all(|b| b.is_ascii_digit());
    Ok(match known_code(text) {
        Some(code) if bare_number => HangupCause { code, raw: None, flag: None },
        Some(code) => HangupCause { code, raw: Some(text.to_owned()), flag: None },
        None => HangupCause { code: 0, raw: Some(text.to_owned()), flag: Some(CauseFlag::Unrecognised) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_q850_table_covers_every_code_in_order_with_unique_names() {
        for (index, cause) in Q850.iter().enumerate() {
            assert_eq!(usize::from(cause.code), index);
            assert!(!cause.name.is_empty() && !cause.description.is_empty());
        }
        let mut names: Vec<&str> = Q850.iter().map(|c| c.name).collect();
        names.extend(Q850.iter().filter_map(|c| c.freeswitch));
        names.extend(FREESWITCH_EXTRA.iter().map(|c| c.name));
        let mut upper: Vec<String> = names.iter().map(|n| n.to_ascii_uppercase()).collect();
        upper.sort();
        // A tollbook name may equal FreeSWITCH's for the same code; no name may name two codes.
        for pair in upper.windows(2).filter(|w| w[0] == w[1]) {
            let codes: Vec<u16> = Q850
                .iter()
                .filter(|c| c.name.eq_ignore_ascii_case(&pair[0]) || c.freeswitch == Some(pair[0].as_str()))
                .map(|c| c.code)
                .collect();
            assert_eq!(codes.len(), 1, "{} names {codes:?}", pair[0]);
        }
    }

    #[test]
    fn the_causes_the_issue_names_are_read_and_none_is_refused() {
        for (text, code) in [
            ("ORIGINATOR_CANCEL", 16),
            ("NORMAL_TEMPORARY_FAILURE", 41),
            ("RECOVERY_ON_TIMER_EXPIRE", 102),
            ("NORMAL_CIRCUIT_CONGESTION", 34),
            ("SWITCH_CONGESTION", 42),
            ("MEDIA_TIMEOUT", 16),
            ("ALLOTTED_TIMEOUT", 16),
            ("UNSPECIFIED", 0),
            ("NONE", 0),
            ("0", 0),
            ("normal_clearing", 16),
            ("NO ANSWER", 19),
            ("no answer", 19),
            ("BUSY", 17),
            ("FAILED", 41),
            ("CONGESTION", 34),
            ("ANSWERED", 16),
            ("sip:486", 17),
            ("SIP 404", 1),
            ("sip:200", 16),
            ("sip:599", 31),
            ("127", 127),
        ] {
            let cause = read_cause(Some(text)).unwrap();
            assert_eq!(cause.code, code, "{text}");
            assert_eq!(cause.flag, None, "{text}");
            let bare = text.bytes().all(|b| b.is_ascii_digit());
            assert_eq!(cause.raw.as_deref(), (!bare).then_some(text), "{text}");
        }
    }

    #[test]
    fn every_freeswitch_name_is_known() {
        for name in Q850.iter().filter_map(|c| c.freeswitch).chain(FREESWITCH_EXTRA.iter().map(|c| c.name)) {
            assert!(known_code(name).is_some(), "{name}");
        }
    }

    #[test]
    fn a_missing_or_unknown_cause_is_flagged_not_refused() {
        assert_eq!(read_cause(None).unwrap(), HangupCause { code: 16, raw: None, flag: Some(CauseFlag::Missing) });
        assert_eq!(read_cause(Some("  ")).unwrap().flag, Some(CauseFlag::Missing));
        for text in ["200x", "128", "999", "sip:999", "WEIRD_NEW_CAUSE"] {
            let cause = read_cause(Some(text)).unwrap();
            assert_eq!(cause, HangupCause { code: 0, raw: Some(text.into()), flag: Some(CauseFlag::Unrecognised) });
        }
        assert_eq!(read_cause(Some(&"x".repeat(65))).unwrap_err().field(), Some("hangup_cause"));
        assert_eq!(read_cause(Some("a\u{7}b")).unwrap_err().field(), Some("hangup_cause"));
    }

    #[test]
    fn sip_statuses_follow_rfc_3398() {
        assert_eq!(sip_to_q850(404), 1);
        assert_eq!(sip_to_q850(486), 17);
        assert_eq!(sip_to_q850(408), 102);
        assert_eq!(sip_to_q850(503), 41);
        assert_eq!(sip_to_q850(603), 21);
        assert_eq!(sip_to_q850(299), 16);
        assert_eq!(sip_to_q850(380), 31);
    }

    proptest! {
        /// Whatever a switch writes (within the length limit, no control characters),
        /// the cause is read: a known one unflagged, anything else kept and flagged.
        #[test]
        fn any_printable_text_is_read(text in "[ -~]{1,64}") {
            let cause = read_cause(Some(&text)).unwrap();
            prop_assert!(cause.code <= 127);
            match cause.flag {
                None => prop_assert_eq!(known_code(&text), Some(cause.code)),
                Some(CauseFlag::Unrecognised) => {
                    prop_assert_eq!(known_code(&text), None);
                    prop_assert_eq!(cause.raw.as_deref(), Some(text.trim()));
                }
                Some(CauseFlag::Missing) => prop_assert!(text.trim().is_empty()),
            }
        }

        /// Every code reads back as itself, by number and by each of its names.
        #[test]
        fn every_code_reads_back(code in 0u16..=127) {
            prop_assert_eq!(read_cause(Some(&code.to_string())).unwrap().code, code);
            let cause = q850(code).unwrap();
            prop_assert_eq!(known_code(cause.name), Some(code));
            prop_assert_eq!(known_code(&cause.name.to_ascii_uppercase()), Some(code));
            if let Some(name) = cause.freeswitch {
                prop_assert_eq!(known_code(name), Some(code));
            }
        }
    }
}
