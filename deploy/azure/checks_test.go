package azure

import (
	"strings"
	"testing"
)

// TestChecksCatchMistakes feeds each template check a small template with
// one mistake and wants it reported, so a check that silently passes
// everything fails here.
func TestChecksCatchMistakes(t *testing.T) {
	const head = `"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#", "contentVersion": "1.0.0.0"`
	const nsg = `{"type": "Microsoft.Network/networkSecurityGroups", "apiVersion": "2024-05-01", "name": "[variables('nsgName')]"}`
	cases := []struct {
		name     string
		template string
		check    check
		want     string // in one of the errors; empty: no error
	}{
		{"good", `{` + head + `, "parameters": {"p": {"type": "string"}}, "variables": {"nsgName": "[parameters('p')]"},
			"resources": [` + nsg + `, {"type": "Microsoft.Network/networkInterfaces", "apiVersion": "2024-05-01", "name": "nic",
			"dependsOn": ["[resourceId('Microsoft.Network/networkSecurityGroups', variables('nsgName'))]"]}]}`, checkResourceIDs, ""},
		{"undeclared parameter", `{` + head + `, "resources": [{"type": "A.B/c", "apiVersion": "2024-01-01", "name": "[parameters('nope')]"}]}`,
			checkReferences, "parameters('nope') is not declared"},
		{"undeclared variable", `{` + head + `, "variables": {"a": "x"}, "resources": [{"type": "A.B/c", "apiVersion": "2024-01-01", "name": "[variables('b')]"}]}`,
			checkReferences, "variables('b') is not declared"},
		{"dynamic parameter name", `{` + head + `, "parameters": {"p": {"type": "string"}}, "resources": [{"type": "A.B/c", "apiVersion": "2024-01-01", "name": "[parameters(parameters('p'))]"}]}`,
			checkReferences, "want one literal name"},
		{"unknown copy loop", `{` + head + `, "resources": [{"type": "A.B/c", "apiVersion": "2024-01-01", "name": "[string(copyIndex('x'))]", "copy": {"name": "y", "count": 2}}]}`,
			checkReferences, "no copy loop"},
		{"resourceId of a misspelled name", `{` + head + `, "parameters": {"p": {"type": "string"}}, "variables": {"nsgName": "x", "nicName": "y"},
			"resources": [` + nsg + `], "outputs": {"o": {"type": "string", "value": "[resourceId('Microsoft.Network/networkSecurityGroups', variables('nicName'))]"}}}`,
			checkResourceIDs, "no Microsoft.Network/networkSecurityGroups of the template has that name"},
		{"external id from a variable", `{` + head + `, "variables": {"vnet": "x"}, "resources": [` + nsg + `],
			"outputs": {"o": {"type": "string", "value": "[resourceId('Microsoft.Network/virtualNetworks', variables('vnet'))]"}}}`,
			checkResourceIDs, "comes from no parameter"},
		{"external id from a parameter", `{` + head + `, "parameters": {"vnet": {"type": "string"}}, "variables": {"nsgName": "x"}, "resources": [` + nsg + `],
			"outputs": {"o": {"type": "string", "value": "[resourceId('Microsoft.Network/virtualNetworks', parameters('vnet'))]"}}}`,
			checkResourceIDs, ""},
		{"dependsOn an external resource", `{` + head + `, "parameters": {"vnet": {"type": "string"}}, "variables": {"nsgName": "x"},
			"resources": [` + nsg + `, {"type": "A.B/c", "apiVersion": "2024-01-01", "name": "n", "dependsOn": ["[resourceId('Microsoft.Network/virtualNetworks', parameters('vnet'))]"]}]}`,
			checkResourceIDs, "does not declare"},
		{"dependsOn an unknown name", `{` + head + `, "resources": [{"type": "A.B/c", "apiVersion": "2024-01-01", "name": "n", "dependsOn": ["m"]}]}`,
			checkResourceIDs, `"m" is no resource`},
		{"unpinned apiVersion", `{` + head + `, "parameters": {"v": {"type": "string"}}, "resources": [{"type": "A.B/c", "apiVersion": "[parameters('v')]", "name": "n"}]}`,
			checkAPIVersions, "is not a pinned date"},
		{"reference without a pinned apiVersion", `{` + head + `, "resources": [{"type": "A.B/c", "apiVersion": "2024-01-01", "name": "n"}],
			"outputs": {"o": {"type": "string", "value": "[reference(resourceId('A.B/c', 'n'), 'latest').x]"}}}`,
			checkAPIVersions, "the apiVersion is not a pinned date"},
		{"securestring with a default", `{` + head + `, "parameters": {"url": {"type": "securestring", "defaultValue": "x"}}, "resources": []}`,
			checkSecrets, "parameters.url (securestring) has a default"},
		{"a token by name with a default", `{` + head + `, "parameters": {"sasToken": {"type": "string", "defaultValue": "x"}}, "resources": []}`,
			checkSecrets, "parameters.sasToken (string) has a default"},
		{"secure output", `{` + head + `, "parameters": {"pw": {"type": "securestring"}}, "resources": [],
			"outputs": {"o": {"type": "string", "value": "[parameters('pw')]"}}}`, checkSecrets, "outputs the secure parameter pw"},
		{"outer-scope nested template", `{` + head + `, "resources": [{"type": "Microsoft.Resources/deployments", "apiVersion": "2022-09-01", "name": "d",
			"properties": {"mode": "Incremental", "template": {"resources": []}}}]}`, nil, "expressionEvaluationOptions.scope inner"},
		{"bad expression", `{` + head + `, "resources": [{"type": "A.B/c", "apiVersion": "2024-01-01", "name": "[concat('a', ]"}]}`,
			checkReferences, "column 13"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tm, err := decodeTemplate([]byte(tc.template), "test.json")
			if err != nil {
				t.Fatal(err)
			}
			levels, err := tm.levels()
			var errs []error
			if err != nil {
				errs = append(errs, err)
			}
			for _, l := range levels {
				if tc.check != nil {
					errs = append(errs, tc.check(l)...)
				}
			}
			var all []string
			for _, e := range errs {
				all = append(all, e.Error())
			}
			got := strings.Join(all, "\n")
			switch {
			case tc.want == "" && got != "":
				t.Errorf("want no problem, got:\n%s", got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Errorf("want a problem with %q, got:\n%s", tc.want, got)
			}
		})
	}
}
