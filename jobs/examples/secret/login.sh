#!/bin/sh
# Printing the secret is a mistake scripts make: flwd redacts it to *** in the stored log,
# in every form: the value, each token, and the list as JSON ($FLWD_ARG_TOKENS).
echo "logging in as ${FLWD_ARG_USER} with password ${FLWD_ARG_PASSWORD}"
echo "extra tokens: ${FLWD_ARG_TOKENS}"
echo "logged in"
