package event

// The extended schema: fields some sources fill beyond Event's typed ones
// (a process's command line, a DNS query, an appliance's vendor). They live
// in Attrs under these names, which have no dot, so no RFC 5424 parameter
// ("sdid.param") and no format's raw key ("cef.act", "kv.srcip") can take
// them; rules name them like typed fields (`command_line`, `group_by:
// [target_user]`). docs/fields.md documents each, and per source what
// fills it.
const (
	FieldProcess           = "process"             // image of the process: full path when known
	FieldCommandLine       = "command_line"        // the process's command line
	FieldParentProcess     = "parent_process"      // image of the parent process
	FieldParentCommandLine = "parent_command_line" // the parent's command line
	FieldProcessID         = "process_id"          // the process id (decimal)
	FieldFilePath          = "file_path"           // a file the event is about
	FieldFileHash          = "file_hash"           // its hash, as the source wrote it
	FieldRegistryKey       = "registry_key"        // a Windows registry key or value path
	FieldTargetUser        = "target_user"         // the account acted upon (user is the actor)
	FieldLogonType         = "logon_type"          // Windows logon type (2, 3, 10, ...)
	FieldService           = "service"             // a service (name) or network service
	FieldDNSQuery          = "dns_query"           // a DNS name queried
	FieldURL               = "url"                 // a URL requested
	FieldHTTPMethod        = "http_method"         // GET, POST, ...
	FieldHTTPStatus        = "http_status"         // the response status (decimal)
	FieldRuleName          = "rule_name"           // the appliance's rule or policy that decided
	FieldBytesIn           = "bytes_in"            // bytes received by the source (decimal)
	FieldBytesOut          = "bytes_out"           // bytes sent by the source (decimal)
	FieldDeviceVendor      = "device_vendor"       // the appliance's vendor (CEF, LEEF)
	FieldDeviceProduct     = "device_product"      // the appliance's product (CEF, LEEF)
	FieldEventCode         = "event_code"          // the source's own event id (CEF signature, LEEF event id, Windows EventID)
	FieldChannel           = "channel"             // the Windows event log channel: Security, System, Microsoft-Windows-Sysmon/Operational
)

// Schema lists the extended fields, in documentation order.
var Schema = []string{
	FieldProcess, FieldCommandLine, FieldParentProcess, FieldParentCommandLine, FieldProcessID,
	FieldFilePath, FieldFileHash, FieldRegistryKey, FieldTargetUser, FieldLogonType, FieldService,
	FieldDNSQuery, FieldURL, FieldHTTPMethod, FieldHTTPStatus, FieldRuleName, FieldBytesIn, FieldBytesOut,
	FieldDeviceVendor, FieldDeviceProduct, FieldEventCode, FieldChannel,
}

var schemaSet = func() map[string]bool {
	m := make(map[string]bool, len(Schema))
	for _, f := range Schema {
		m[f] = true
	}
	return m
}()

// IsSchemaField reports whether name is a field of the extended schema.
func IsSchemaField(name string) bool { return schemaSet[name] }

// Set stores a schema field (or any attribute) when v is not empty.
func (ev *Event) Set(name, v string) {
	if v == "" {
		return
	}
	if ev.Attrs == nil {
		ev.Attrs = make(map[string]string, 8)
	}
	ev.Attrs[name] = v
}
