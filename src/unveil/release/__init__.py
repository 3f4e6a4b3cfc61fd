"""The pure logic of progressive delivery: plans, the judge, schedules and windows.

Given a release's state, the time and the observations, it answers the new
state and the actions to carry out; it reads no clock, opens no connection
and starts no thread (an import-linter contract keeps it so). The service
layer carries its actions out.
"""
