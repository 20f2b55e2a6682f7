/*
 * image_cmd.c - `forgebox image seal DIR` and `forgebox image verify`.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "image/image.h"

int fb_cmd_image(int argc, char **argv)
{
    fb_err err = {{0}};
    if (argc == 3 && strcmp(argv[1], "seal") == 0) {
        if (fb_image_seal(argv[2], &err) < 0) {
            fprintf(stderr, "forgebox: %s\n", err.msg);
            return 1;
        }
        printf("sealed %s/manifest.json\n", argv[2]);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "verify") == 0) {
        const char *flag = NULL;
        if (argc == 4 && strcmp(argv[2], "--image") == 0)
            flag = argv[3];
        else if (argc != 2)
            goto usage;
        char buf[4096];
        const char *dir = fb_cli_image_dir(flag, buf, sizeof buf);
        if (fb_image_verify(dir, NULL, FB_IMAGE_NEEDS_VM | FB_IMAGE_NEEDS_JAIL | FB_IMAGE_NEEDS_EROFS, &err) < 0) {
            fprintf(stderr, "forgebox: %s\n", err.msg);
            return 1;
        }
        printf("%s: every artifact matches its manifest\n", dir);
        return 0;
    }
usage:
    fprintf(stderr, "usage: forgebox image seal DIR\n       forgebox image verify [--image DIR]\n");
    return FB_EXIT_USAGE;
}
