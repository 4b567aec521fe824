/* The targets, found by name. */
#include <string.h>

#include "../target.h"

static const struct ublk_target_ops *const all_targets[] = {
	&ublk_target_null,
	&ublk_target_ram,
	&ublk_target_file,
	&ublk_target_lua,
};

const struct ublk_target_ops *ublk_target_find(const char *name)
{
	size_t i;

	for (i = 0; name && i < sizeof(all_targets) / sizeof(all_targets[0]); i++)
		if (strcmp(all_targets[i]->name, name) == 0)
			return all_targets[i];
	return NULL;
}
